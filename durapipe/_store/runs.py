"""Runs and what they have: their rows, histories, inputs and log lines; and gc."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BindParameter, bindparam, delete, insert, select, text, update
from sqlalchemy.engine import Connection, Row

from .._kinds import RunStatus
from . import errors, journal_sql
from . import schema as S
from .base import StoreBase
from .journal import Op
from .pages import with_tags

_RUN_FIELDS = tuple(c.name for c in S.runs.c)
_NewRun = namedtuple("_NewRun", _RUN_FIELDS)  # type: ignore[misc]  # a just-inserted run, as a row
# What belongs to a run and goes with it (gc): every table with a run_id of the run's own.
_RUN_OWNED = (S.events, S.inputs, S.messages, S.published, S.logs, S.tags, S.forks)
GC_BATCH = 1000  # runs deleted per transaction by gc, at most
GC_FIRST_BATCH, GC_MIN_BATCH = 100, 10
GC_BATCH_SECONDS = 0.01  # a longer batch halves the next: what a worker's commit may wait
GC_SQLITE_PAUSE = 0.025  # between two batches, at least (SQLite)
# PostgreSQL: gc vacuums the tables itself once it has deleted this share of the runs (and at
# least GC_VACUUM_MIN), before autovacuum's 20% would; and at the end, past GC_VACUUM_TAIL.
GC_VACUUM_SHARE, GC_VACUUM_MIN, GC_VACUUM_TAIL = 0.1, 10_000, 1_000


def _gc_statements(older_than: float) -> tuple[Any, list[Any], Any]:
    """gc's statements, built once: building one costs more than SQLite takes to run it.
    -> (the next batch's oldest runs, the deletes of what they own, the delete of the runs)."""
    r = S.runs.c
    # Keyset on finished_at: the index is read from where the last batch stopped, not over
    # the entries of the runs deleted before (PostgreSQL keeps them until vacuum).
    oldest = (
        select(r.id, r.finished_at)
        .where(
            r.finished_at >= bindparam("after"),
            r.finished_at < older_than,
            r.status.in_(list(S.TERMINAL)),
        )
        .order_by(r.finished_at)
        .limit(bindparam("size"))
    )
    ids: BindParameter[Any] = bindparam("ids", expanding=True)
    owned = [delete(table).where(table.c.run_id.in_(ids)) for table in _RUN_OWNED]
    return oldest, owned, delete(S.runs).where(r.id.in_(ids))


async def _vacuum(store: StoreBase, now: bool = True) -> float:
    """PostgreSQL: VACUUM the tables gc deletes from (when ``now``) -> the runs left, as
    autovacuum estimates them (``pg_class.reltuples``)."""
    if now:
        await store.db.vacuum([t.name for t in (*_RUN_OWNED, S.runs)])
    q = text("SELECT reltuples FROM pg_class WHERE oid = 'durapipe_runs'::regclass")
    return max(0.0, float(await store._read(lambda c: c.execute(q).scalar_one())))


# The start of a step stored in one row with its completion, as a timeline reads it.
_Mark = namedtuple("_Mark", "run_id kind step at")


class Runs(StoreBase):
    """Reading and writing runs, their events, inputs and logs (outside a lease's journal)."""

    async def create_run(
        self,
        row: dict[str, Any],
        first_events: list[dict[str, Any]],
        tags: dict[str, str] | None = None,
    ) -> tuple[Any, bool]:
        """Insert a run; if its id exists already return that run instead. -> (row, created).

        The insert goes through the journal, so runs started at the same moment (a burst of
        ``Client.start``) share one transaction, as steps do.
        """
        full = {c: row.get(c) for c in _RUN_FIELDS}
        try:
            await self.journal.submit(
                Op(
                    run_id=row["id"],
                    owner=None,
                    attempt=None,
                    new_runs=[full],
                    events=first_events,
                    tags=tags or None,
                )
            )
        except Exception as exc:
            if not errors.is_integrity(exc):
                raise
            existing = await self.get_run(row["id"])
            if existing is None:  # the clash was not on the run's id
                raise
            return existing, False
        return _NewRun(**full), True

    async def get_run(self, run_id: str) -> Row[Any] | None:
        def _tx(conn: Connection) -> Any:
            return (conn.execute(select(S.runs).where(S.runs.c.id == run_id))).first()

        return await self._read(_tx)

    async def get_runs(self, run_ids: Sequence[str]) -> list[Row[Any]]:
        if not run_ids:
            return []

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(select(S.runs).where(S.runs.c.id.in_(list(run_ids))))).all())

        return await self._read(_tx)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        root_run_id: str | None = None,
        limit: int = 200,
        tags: dict[str, str] | None = None,
        latest_only: bool = False,
    ) -> list[Row[Any]]:
        q = select(S.runs)
        if latest_only and not status:
            q = q.where(S.runs.c.status != RunStatus.CONTINUED)
        if status:
            q = q.where(S.runs.c.status == status)
        if pipeline:
            q = q.where(S.runs.c.pipeline == pipeline)
        if roots_only:
            q = q.where(S.runs.c.parent_run_id.is_(None))
        if root_run_id:
            q = q.where(S.runs.c.root_run_id == root_run_id)
        q = q.order_by(S.runs.c.created_at.desc(), S.runs.c.id.desc()).limit(limit)

        def _tx(conn: Connection) -> Any:
            # Tags AND together, each looked up the way that is fast for it (pages.with_tags).
            return list((conn.execute(with_tags(conn, q, tags))).all())

        return await self._read(_tx)

    async def children(self, run_id: str) -> list[Row[Any]]:
        q: Any = (
            select(S.runs).where(S.runs.c.parent_run_id == run_id).order_by(S.runs.c.created_at)
        )
        if self.is_sqlite:
            # Told the index: after an ANALYZE, SQLite's statistics count every run without a
            # parent (most runs) as one value of ix_durapipe_runs_parent, and it walked the
            # whole table or ix_durapipe_runs_created instead: 100 ms with 1,000,000 runs, for
            # every `durapipe show`. (SQLAlchemy does not render SQLite's INDEXED BY.)
            # The columns by name, in the models' order: .columns() matches them by position.
            names = ", ".join(c.name for c in S.runs.c)
            q = (
                text(
                    f"SELECT {names} FROM durapipe_runs INDEXED BY ix_durapipe_runs_parent"
                    " WHERE parent_run_id = :parent ORDER BY created_at"
                )
                .bindparams(parent=run_id)
                .columns(*S.runs.c)
            )

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    async def events(self, run_id: str) -> list[Row[Any]]:
        """The whole history of a run, in order: one query, however long."""
        q = select(S.events).where(S.events.c.run_id == run_id).order_by(S.events.c.seq)

        def _tx(conn: Connection) -> Any:
            return journal_sql.expand(conn.execute(q))

        return await self._read(_tx)

    async def timelines(self, run_ids: Sequence[str]) -> dict[str, list[Any]]:
        """What working time is computed from, for several runs in one pass: the events that
        start and end executions, waits and commands (``kind, step, at``), in order."""
        e = S.events.c
        out: dict[str, list[Any]] = {rid: [] for rid in run_ids}
        ids = list(run_ids)

        def _tx(conn: Connection) -> Any:
            for i in range(0, len(ids), 500):
                q = (
                    select(e.run_id, e.kind, e.step, e.at, e.started_at)
                    .where(e.run_id.in_(ids[i : i + 500]), e.kind.in_(S.TIMELINE_KINDS))
                    .order_by(e.run_id, e.seq)
                )
                for row in conn.execute(q).all():
                    if row.started_at is not None:  # a step in one row: its start first
                        start = _Mark(row.run_id, "step_started", row.step, row.started_at)
                        out[row.run_id].append(start)
                    out[row.run_id].append(row)
            return out

        return await self._read(_tx)

    # ------------------------------------------------------------------ inputs

    async def send_input(self, run_id: str, name: str, value: str, *, now: float) -> int:
        r = S.runs.c
        # The run's row is locked first, as a suspending worker's write locks it (FOR UPDATE;
        # SQLite's write transaction is BEGIN IMMEDIATE): either that write sees this input and
        # stays due, or this one sees the run suspended and wakes it. Without the lock, an
        # input committed just after the suspending write had looked (and just after this
        # transaction found the run still leased) woke nobody.
        lock = self._lock(select(r.id).where(r.id == run_id))

        def _tx(conn: Connection) -> Any:
            conn.execute(lock)
            res = conn.execute(
                insert(S.inputs).values(run_id=run_id, name=name, value=value, created_at=now)
            )
            # A suspended run waiting for anything wakes and looks; a spurious wake only replays.
            conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.status == RunStatus.WAITING, r.lease_owner.is_(None))
                .values(wake_at=now)
            )
            self._notify(conn, f"input:{run_id}")
            pk = res.inserted_primary_key
            return int(pk[0]) if pk else 0

        return await self._write(_tx)

    async def next_input(self, run_id: str, name: str) -> Row[Any] | None:
        c = S.inputs.c
        q = (
            select(S.inputs)
            .where(c.run_id == run_id, c.name == name, c.consumed_seq.is_(None))
            .order_by(c.id)
            .limit(1)
        )

        def _tx(conn: Connection) -> Any:
            return (conn.execute(q)).first()

        return await self._read(_tx)

    async def inputs_of(self, run_id: str) -> list[Row[Any]]:
        q = select(S.inputs).where(S.inputs.c.run_id == run_id).order_by(S.inputs.c.id)

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    # ------------------------------------------------------------------ logs

    async def write_logs(self, rows: list[dict[str, Any]]) -> None:
        """Store log rows through the journal: the raw drivers, and in order with the rows that
        ride along with history writes. A row's ``line`` may hold several lines (see read_logs)."""
        if not rows:
            return
        await self.journal.submit(Op(run_id="", owner=None, attempt=None, logs=rows))

    async def read_logs(
        self, root_run_id: str, *, after_id: int = 0, limit: int = 5000
    ) -> list[journal_sql.LogLine]:
        """The run tree's log lines after row ``after_id``, in order: at least ``limit`` lines when
        that many are stored (whole rows, so a few more), fewer only at the end. A stored row may
        hold many lines (an exec's output is stored a chunk at a time); they come back one by one,
        with the row's id. Rows are read a page at a time, so memory stays bounded."""
        c = S.logs.c
        page = 100

        def _tx(conn: Connection) -> Any:
            out: list[journal_sql.LogLine] = []
            last = after_id
            while len(out) < limit:
                q = (
                    select(S.logs)
                    .where(c.root_run_id == root_run_id, c.id > last)
                    .order_by(c.id)
                    .limit(min(page, limit - len(out)))
                )
                rows = conn.execute(q).all()
                if not rows:
                    break
                out += journal_sql.log_lines(rows)
                last = rows[-1].id
            return out

        return await self._read(_tx)

    # ------------------------------------------------------------------ gc

    async def gc(
        self,
        *,
        older_than: float,
        batch: int = GC_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete the finished runs that finished before ``older_than``, with everything that
        belongs to them (events, inputs, messages to them, published state, log lines, tags,
        fork links). -> how many runs were deleted.

        Oldest first, in batches of at most ``batch`` runs, each its own transaction, with a
        pause after it at least as long as it took: a running worker's commit waits for one
        short batch at most (SQLite has one write lock), never for the whole gc. On SQLite
        batches start at 100 runs; one whose statements take longer than GC_BATCH_SECONDS
        halves the next (a cold cache, big histories), a quick one doubles it, up to ``batch``.
        On PostgreSQL a batch locks only the rows it deletes, which no worker writes, and gc
        VACUUMs the tables itself after each tenth of the runs and at the end (see
        ``PostgreSQL.vacuum``: autovacuum's writes stall every commit at the next checkpoint).
        Interrupted, it leaves whole runs deleted or kept, and running it again goes on.
        ``progress`` is called with the total after each batch.
        """
        total, after = 0, float("-inf")
        size = min(batch, GC_FIRST_BATCH) if self.is_sqlite else batch
        oldest, delete_owned, delete_runs = _gc_statements(older_than)

        def _tx(conn: Connection) -> tuple[int, int, float, float]:
            began = time.monotonic()  # it holds its locks from here (SQLite: BEGIN IMMEDIATE)
            if not self.is_sqlite:  # hand the pages it evicts to the disk as it goes (vacuum)
                conn.exec_driver_sql("SET LOCAL backend_flush_after = '256kB'")
            found = conn.execute(oldest, {"after": after, "size": size}).all()
            part = {"ids": [x.id for x in found]}
            if not found:
                return 0, 0, after, 0.0
            for stmt in delete_owned:
                conn.execute(stmt, part)
            n = conn.execute(delete_runs, part).rowcount
            return n, len(found), found[-1].finished_at, time.monotonic() - began

        vacuum_past = None if self.is_sqlite else GC_VACUUM_SHARE * await _vacuum(self, False)
        since = 0  # runs deleted since gc's last VACUUM
        while True:
            # ``took``: the batch's statements, not its wait for the locks (a worker committing
            # steps back to back holds SQLite's lock often) nor its commit (an fsync: on a busy
            # disk smaller batches only make more of them).
            n, seen, after, took = await self._write(_tx)
            total += n
            since += n
            if progress is not None:
                progress(total)
            if seen < size:
                if vacuum_past is not None and since >= GC_VACUUM_TAIL:
                    await _vacuum(self)
                return total
            if vacuum_past is not None and since >= max(GC_VACUUM_MIN, vacuum_past):
                vacuum_past, since = GC_VACUUM_SHARE * await _vacuum(self), 0
            if self.is_sqlite and took > GC_BATCH_SECONDS:
                size = max(GC_MIN_BATCH, size // 2)
            elif self.is_sqlite and took < GC_BATCH_SECONDS / 2:
                size = min(batch, size * 2)
            # SQLite has no queue of writers: one waiting for the lock tries again every
            # millisecond (sqlite.BUSY_POLL). The pause lets a worker's waiting commit in
            # between two batches, and keeps gc's share of the lock to about half.
            pause = max(took, GC_SQLITE_PAUSE) if self.is_sqlite else took
            await asyncio.sleep(min(pause, 0.1))
