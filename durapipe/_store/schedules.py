"""Schedules: their rows, and firing a due tick (advancing the schedule and creating its run in
one transaction).

Any number of workers may fire the same schedule. The schedule's row is locked (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite's write transaction locks the database) and its
``next_fire_at`` read again under the lock, so a tick is fired once; its run's id is derived from
the schedule and the tick, so even a second try of the same tick (a schedule deleted and added
again) finds the run there and starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from .. import _schedules as sch
from . import errors
from . import schema as S
from .base import StoreBase

# (schedule row, tick, run id) -> (the run's row, its first events): built by the caller (the
# worker or the client), which knows the pipeline's version and how runs are recorded.
BuildRun = Callable[[Any, float, str], tuple[dict[str, Any], list[dict[str, Any]]]]

MAX_TICKS_PER_FIRE = 1000  # catch-up `all` fires a long backlog over several transactions


@dataclass(slots=True)
class Fired:
    """What one round of firing did."""

    run_ids: list[str]  # runs created
    schedules: int  # schedules it looked at
    more: bool  # it stopped at its limit: look again at once


class Schedules(StoreBase):
    """Schedules' rows; firing their ticks."""

    # ------------------------------------------------------------------ rows

    async def add_schedule(self, row: dict[str, Any]) -> bool:
        """Insert a schedule. -> False (nothing changed) when one of that name exists."""
        c = S.schedules.c

        def _tx(conn: Connection) -> bool:
            if conn.execute(select(c.name).where(c.name == row["name"])).first() is not None:
                return False
            conn.execute(insert(S.schedules).values(**row))
            self._notify(conn, "schedule")
            return True

        try:
            return await self._write(_tx)
        except Exception as exc:
            if errors.is_integrity(exc):  # added meanwhile by another client (PostgreSQL)
                return False
            raise

    async def declare_schedule(self, row: dict[str, Any]) -> str:
        """Upsert a schedule declared in code. -> ``created``, ``updated``, ``unchanged``, or
        ``taken`` (a schedule of that name was added at runtime: it is left alone).

        A changed timing (kind, spec, time zone) restarts from the row's new ``next_fire_at``;
        otherwise the schedule keeps its place, its pause and its last run.
        """
        c = S.schedules.c
        same = ("pipeline", "target", "kind", "spec", "tz", "inputs", "overlap", "catch_up")
        lock = self._lock(select(S.schedules).where(c.name == row["name"]))

        def _tx(conn: Connection) -> str:
            old = conn.execute(lock).first()
            if old is None:
                conn.execute(insert(S.schedules).values(**row))
                self._notify(conn, "schedule")
                return "created"
            if old.source != "code":
                return "taken"
            if all(getattr(old, k) == row[k] for k in same):
                return "unchanged"
            values = {k: row[k] for k in same}
            values["updated_at"] = row["updated_at"]
            if (old.kind, old.spec, old.tz) != (row["kind"], row["spec"], row["tz"]):
                values["next_fire_at"] = row["next_fire_at"]
            conn.execute(update(S.schedules).where(c.name == row["name"]).values(**values))
            self._notify(conn, "schedule")
            return "updated"

        try:
            return await self._write(_tx)
        except Exception as exc:
            if not errors.is_integrity(exc):
                raise
        # Workers starting together: another inserted it between our look and our insert
        # (PostgreSQL locks no row that is not there yet). Look again: it is there now.
        return await self._write(_tx)

    async def get_schedule(self, name: str) -> Row[Any] | None:
        def _tx(conn: Connection) -> Any:
            return conn.execute(self._with_last_run().where(S.schedules.c.name == name)).first()

        return await self._read(_tx)

    async def list_schedules(self) -> list[Row[Any]]:
        q = self._with_last_run().order_by(S.schedules.c.name)

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    def _with_last_run(self) -> Any:
        c, r = S.schedules.c, S.runs.c
        return select(S.schedules, r.status.label("last_status")).select_from(
            S.schedules.outerjoin(S.runs, r.id == c.last_run_id)
        )

    async def set_schedule_paused(self, name: str, paused: bool, *, now: float) -> bool:
        """Pause or resume. Resuming starts from the first tick after ``now``: ticks that
        passed while it was paused are not caught up. -> False: no such schedule."""
        c = S.schedules.c
        lock = self._lock(select(S.schedules).where(c.name == name))

        def _tx(conn: Connection) -> bool:
            row = conn.execute(lock).first()
            if row is None:
                return False
            values: dict[str, Any] = {"paused": paused, "updated_at": now}
            if row.paused and not paused:
                values["next_fire_at"] = sch.next_tick(row.kind, row.spec, row.tz, now)
            conn.execute(update(S.schedules).where(c.name == name).values(**values))
            self._notify(conn, "schedule")
            return True

        return await self._write(_tx)

    async def delete_schedule(self, name: str) -> bool:
        """-> False: no such schedule. Its runs stay."""

        def _tx(conn: Connection) -> bool:
            res = conn.execute(delete(S.schedules).where(S.schedules.c.name == name))
            self._notify(conn, "schedule")
            return bool(res.rowcount)

        return await self._write(_tx)

    # ------------------------------------------------------------------ firing

    def _fireable(self, pipelines: Iterable[str]) -> list[Any]:
        """Schedules of these pipelines that are not paused and not holding a tick back
        behind their previous run (overlap ``queue``: it waits for that run to end)."""
        c, r = S.schedules.c, S.runs.c
        going = select(r.id).where(r.id == c.last_run_id, r.status.in_(list(S.ACTIVE))).exists()
        return [
            c.paused.is_(False),
            c.pipeline.in_(list(pipelines)),
            or_(c.overlap != "queue", c.last_run_id.is_(None), ~going),
        ]

    async def next_schedule_at(self, pipelines: Iterable[str]) -> float | None:
        """When the next of these pipelines' schedules is due (None: none is)."""
        names = list(pipelines)
        if not names:
            return None
        q = select(func.min(S.schedules.c.next_fire_at)).where(*self._fireable(names))

        def _tx(conn: Connection) -> float | None:
            got = conn.execute(q).scalar()
            return float(got) if got is not None else None

        return await self._read(_tx)

    async def fire_due(
        self,
        *,
        pipelines: Iterable[str],
        now: float,
        build: BuildRun,
        limit: int = 100,
        clock: Callable[[], float] | None = None,
    ) -> Fired:
        """Fire the due ticks of up to ``limit`` schedules of these pipelines, each schedule's
        advance and its runs in the same transaction (see the module's docstring).

        ``now`` picks the schedules that are due. ``clock``, when given, is read again once
        their rows are locked: whether a tick is late (catch-up ``none``) is judged at the
        time its run is made, not when the worker first looked (a slow transaction would
        otherwise start a tick that was already late when its run was created)."""
        c = S.schedules.c
        names = list(pipelines)
        if not names:
            return Fired([], 0, False)
        pick = self._lock(
            select(S.schedules)
            .where(*self._fireable(names), c.next_fire_at <= now)
            .order_by(c.next_fire_at)
            .limit(limit),
            skip_locked=True,
        )

        def _tx(conn: Connection) -> Fired:
            rows = list(conn.execute(pick).all())
            at = max(now, clock()) if clock is not None and rows else now
            created = self._fire(conn, rows, at, build) if rows else []
            return Fired(created, len(rows), len(rows) == limit)

        return await self._write(_tx)

    def _fire(self, conn: Connection, rows: list[Any], now: float, build: BuildRun) -> list[str]:
        """Fire the due ticks of these locked schedules: a few statements for the whole batch."""
        c, r = S.schedules.c, S.runs.c
        last_ids = [row.last_run_id for row in rows if row.last_run_id is not None]
        prevs = {
            p.id: p
            for p in conn.execute(
                select(r.id, r.status, r.finished_at).where(r.id.in_(last_ids))
            ).all()
        }
        plans = [(row, _plan(row, prevs.get(row.last_run_id), now)) for row in rows]
        wanted = {
            sch.tick_run_id(row.name, t): (row, t) for row, (fire, _upto) in plans for t in fire
        }
        exists = {
            x for (x,) in conn.execute(select(r.id).where(r.id.in_(list(wanted)))).all()
        }  # a tick's run that exists already: a second try starts nothing
        runs: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for run_id, (row, tick) in wanted.items():
            if run_id in exists:
                continue
            run, evs = build(row, tick, run_id)
            runs.append(run)
            events += evs
        if runs:
            conn.execute(insert(S.runs), runs)
        if events:
            conn.execute(insert(S.events), events)
        moves = []
        for row, (fire, upto) in plans:
            timing = (row.kind, row.spec, row.tz)
            moves.append(
                {
                    "b_name": row.name,
                    "b_was": row.next_fire_at,
                    "b_next": sch.next_tick(*timing, upto),
                    "b_skipped": row.skipped
                    + sch.count_ticks(*timing, row.next_fire_at, upto)
                    - len(fire),
                    "b_tick": fire[-1] if fire else row.last_tick_at,
                    "b_run": sch.tick_run_id(row.name, fire[-1]) if fire else row.last_run_id,
                    "b_now": now,
                }
            )
        conn.execute(
            update(S.schedules)
            .where(c.name == bindparam("b_name"), c.next_fire_at == bindparam("b_was"))
            .values(
                next_fire_at=bindparam("b_next"),
                skipped=bindparam("b_skipped"),
                last_tick_at=bindparam("b_tick"),
                last_run_id=bindparam("b_run"),
                updated_at=bindparam("b_now"),
            ),
            moves,
        )
        if runs:
            self._notify(conn, "run")
        return [run["id"] for run in runs]

    async def trigger_schedule(
        self, name: str, *, run_id: str, now: float, build: BuildRun
    ) -> bool:
        """Start one run of the schedule now (its run becomes the schedule's last run).
        -> False: no such schedule."""
        c = S.schedules.c
        lock = self._lock(select(S.schedules).where(c.name == name))

        def _tx(conn: Connection) -> bool:
            row = conn.execute(lock).first()
            if row is None:
                return False
            run, events = build(row, now, run_id)
            conn.execute(insert(S.runs).values(**run))
            if events:
                conn.execute(insert(S.events), events)
            conn.execute(
                update(S.schedules)
                .where(c.name == name)
                .values(last_run_id=run_id, last_tick_at=now, updated_at=now)
            )
            self._notify(conn, "run")
            return True

        return await self._write(_tx)


def _plan(row: Any, prev: Any, now: float) -> tuple[list[float], float]:
    """Which due ticks of a schedule start a run now, and up to which tick the schedule is done
    (the next tick after it is its new ``next_fire_at``). ``prev``: its last run (status,
    finished_at), if it has one."""
    timing = (row.kind, row.spec, row.tz)
    first = row.next_fire_at
    last = sch.last_tick(*timing, now)
    going = prev is not None and prev.status in S.ACTIVE
    upto = last
    fire: list[float]
    if going and row.overlap == "skip":
        fire = []
    elif row.catch_up == "all":
        fire = sch.ticks_between(*timing, first, now, most=MAX_TICKS_PER_FIRE)
        if len(fire) == MAX_TICKS_PER_FIRE:
            upto = fire[-1]  # a long backlog: the rest next round
    elif row.catch_up == "last":
        fire = [last]
    else:  # none: only a tick that is not late; one that `queue` held back behind the
        # previous run counts from the end of that run
        since = last
        if row.overlap == "queue" and prev is not None and prev.finished_at:
            since = max(last, prev.finished_at)
        on_time = now - since <= sch.missed_grace(*timing, last)
        fire = [last] if on_time else []
    if row.overlap != "allow" and fire:
        fire = fire[:1]  # the first run goes; the others would overlap it
        if row.overlap == "queue":
            upto = fire[0]  # the ticks after it wait for its run to end
    return fire, upto
