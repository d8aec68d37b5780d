"""Leases: which runs a worker may take, taking them, keeping them, giving them back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text, union_all, update
from sqlalchemy.engine import Connection, Row

from .._kinds import Request, RunStatus
from . import journal_sql
from . import schema as S
from .base import StoreBase
from .queues import claim_queued


@dataclass(frozen=True, kw_only=True)
class ClaimFilter:
    """Which runs a runner may take."""

    pipelines: dict[str, str] | None = None  # name -> version it carries; None = any
    root_run_id: str | None = None  # only this run tree (durapipe run / resume)
    # Lease holders known dead (processes of this host that are gone): their runs are taken at
    # once, as `durapipe resume` takes the root run, instead of after their leases expire.
    dead_owners: tuple[str, ...] = ()


@dataclass(slots=True)
class Claimed:
    """What one claim took: rows, their histories, and when the next run becomes due."""

    rows: list[Any]
    histories: dict[str, list[Any]]
    next_at: float | None


def _recovered(owner: str) -> Any:
    """The run's recovery count after a claim by ``owner``: one more when another holder still
    held its lease (it died, or lost the lease, without ending or releasing the run). Every
    normal ending, suspension and release clears the lease first, so only deaths count."""
    r = S.runs.c
    return case(
        (and_(r.lease_owner.is_not(None), r.lease_owner != owner), r.recoveries + 1),
        else_=r.recoveries,
    )


def _histories(conn: Connection, rows: list[Any]) -> dict[str, list[Any]]:
    """The claimed runs' histories in the same round of work: one query for the batch instead
    of one read per run when each starts."""
    histories: dict[str, list[Any]] = {row.id: [] for row in rows}
    if rows:
        ev = S.events.c
        q = select(S.events).where(ev.run_id.in_(list(histories))).order_by(ev.run_id, ev.seq)
        for e in journal_sql.expand(conn.execute(q)):
            histories[e.run_id].append(e)
    return histories


class Claims(StoreBase):
    """Claiming runs, heartbeats and releases: the worker's side of a lease."""

    def _pick(self, now: float, flt: ClaimFilter, limit: int) -> Any:
        """The ids of up to ``limit`` runnable runs, earliest due first (a run's wake time, or
        when it was created), each locked (skipping locked ones).

        Each kind of runnable run is read from its own index in that order and only as far as
        the limit: pending runs, due sleepers, due waiters, lapsed leases (and the leases of
        dead holders); the earliest of these are taken. One statement that found and sorted
        every runnable run instead cost a sort of all of them per claim: ~7 ms with 10,000
        runs due or pending (bench/wake.py), and more with more.
        """
        r = S.runs.c
        key = func.coalesce(r.wake_at, r.created_at)
        can = self._claimable(flt)
        free = r.lease_owner.is_(None)

        def kind(name: str, *conds: Any, by: Any = key) -> Any:
            q = select(r.id, key.label("k")).where(*conds, *can).order_by(by, r.id).limit(limit)
            return self._lock(q, skip_locked=True).cte(f"due_{name}")

        kinds = [
            # The status as a literal: the partial index of pending runs is then usable.
            kind("pending", S.PENDING_ONLY, free),
            # A wake time is set here, so it is the key, and the (status, wake_at) index's order.
            *(
                kind(str(st), r.status == st, free, r.wake_at <= now, by=r.wake_at)
                for st in S.SUSPENDABLE
            ),
            kind(
                "lapsed",
                r.status.in_(S.ACTIVE),
                r.lease_owner.is_not(None),
                r.lease_expires_at < now,
            ),
        ]
        if flt.dead_owners:  # (a lapsed lease of theirs is in the kind above)
            kinds.append(
                kind(
                    "dead",
                    r.status.in_(S.ACTIVE),
                    r.lease_owner.in_(list(flt.dead_owners)),
                    or_(r.lease_expires_at.is_(None), r.lease_expires_at >= now),
                )
            )
        due = union_all(*(select(k.c.id, k.c.k) for k in kinds)).subquery("due")
        return select(due.c.id).order_by(due.c.k, due.c.id).limit(limit)

    def _claimable(self, flt: ClaimFilter) -> list[Any]:
        """What a worker with filter ``flt`` may take at all (its pipelines, not held)."""
        r = S.runs.c
        conds: list[Any] = []
        if flt.pipelines is not None:
            conds.append(
                or_(
                    *(
                        and_(r.pipeline == name, or_(r.pinned.is_(False), r.version == ver))
                        for name, ver in flt.pipelines.items()
                    )
                )
                if flt.pipelines
                else text("1=0")
            )
        if flt.root_run_id is not None:
            conds.append(r.root_run_id == flt.root_run_id)
        held = select(S.holds.c.pipeline).where(
            S.holds.c.pipeline == r.pipeline,
            or_(S.holds.c.version == "", S.holds.c.version == r.version),
        )
        conds.append(~held.exists())
        return conds

    async def claim(
        self, *, owner: str, flt: ClaimFilter, limit: int, ttl: float, now: float
    ) -> Claimed:
        """Take the leases of up to ``limit`` runnable runs in one statement.

        Also read in the same transaction: the claimed runs' histories, and when the next run
        this worker could take becomes due (a timer, or a lease about to expire), so the worker
        sleeps until then instead of a whole poll interval.
        """
        if limit <= 0:
            return Claimed([], {}, None)
        r = S.runs.c
        pick = self._pick(now, flt, limit)
        later = self._claimable(flt)
        next_due = select(
            # Per status: each is the first entry of an index range, not a read of every timer.
            *(
                select(func.min(r.wake_at))
                .where(r.status == st, r.lease_owner.is_(None), r.wake_at > now, *later)
                .scalar_subquery()
                for st in S.SUSPENDABLE
            ),
            select(func.min(r.lease_expires_at))
            .where(
                r.status.in_(S.ACTIVE),
                r.lease_owner.is_not(None),
                r.lease_expires_at >= now,
                *later,
            )
            .scalar_subquery(),
            # Whether any run waits in a queue (an index probe), in the same round trip: a claim
            # looks at the queues only then, so claims of ordinary runs cost what they did.
            # (Asked per declared queue, so it reads the line's index, not the runs table.)
            select(S.queues.c.name)
            .where(
                select(r.id)
                .where(r.queue == S.queues.c.name, r.status == RunStatus.QUEUED)
                .correlate(S.queues)
                .exists()
            )
            .exists(),
        )
        stmt = (
            update(S.runs)
            .where(r.id.in_(pick.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status=RunStatus.RUNNING,
                updated_at=now,
                recoveries=_recovered(owner),
            )
            .returning(*S.runs.c)
        )

        def _tx(conn: Connection) -> Any:
            rows = list((conn.execute(stmt)).all())
            nxt = conn.execute(next_due).first()
            lined = bool(nxt[-1]) if nxt is not None else False
            times = [t for t in (nxt or ())[:-1] if t is not None]
            if lined and len(rows) < limit:  # what is left of the limit: runs waiting in queues
                queued, rate_due = claim_queued(
                    conn,
                    owner=owner,
                    claimable=later,
                    limit=limit - len(rows),
                    ttl=ttl,
                    now=now,
                    lock=self._lock,
                )
                rows.extend(queued)
                if rate_due is not None:
                    times.append(rate_due)
            next_at = min(times) if times else None
            return Claimed(rows, _histories(conn, rows), next_at)

        return await self._write(_tx)

    async def claim_run(
        self,
        run_id: str,
        *,
        owner: str,
        ttl: float,
        now: float,
        statuses: Iterable[str],
        dead_owners: Iterable[str] = (),
    ) -> Row[Any] | None:
        """Take one run's lease if it is free, expired, or held by a dead process of this host."""
        r = S.runs.c
        free = or_(r.lease_owner.is_(None), r.lease_expires_at < now, r.lease_owner == owner)
        dead = list(dead_owners)
        if dead:
            free = or_(free, r.lease_owner.in_(dead))
        stmt = (
            update(S.runs)
            .where(r.id == run_id, r.status.in_(list(statuses)), free)
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status=RunStatus.RUNNING,
                requested=None,
                updated_at=now,
                # Taken on a person's command (run, resume, cancel here), not by a worker's
                # automatic claim: the count of deaths starts anew (a dead run's cause is fixed).
                recoveries=0,
            )
            .returning(*S.runs.c)
        )

        def _tx(conn: Connection) -> Any:
            return (conn.execute(stmt)).first()

        return await self._write(_tx)

    async def heartbeat(
        self, *, worker_id: str, held: dict[str, int], ttl: float, now: float
    ) -> tuple[set[str], dict[str, str]]:
        """Extend the leases of held runs. -> (runs lost, {run_id: request})."""
        r = S.runs.c
        lost: set[str] = set()
        requests: dict[str, str] = {}

        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.workers).where(S.workers.c.id == worker_id).values(heartbeat_at=now)
            )
            if held:
                ids = sorted(held)
                # Locked in id order first, as the journal locks the runs of a batch: an UPDATE
                # of many rows locks them in whatever order its plan reads them, and a batch
                # committing the same runs then could deadlock with it (PostgreSQL aborts one).
                conn.execute(self._lock(select(r.id).where(r.id.in_(ids)).order_by(r.id)))
                conn.execute(
                    update(S.runs)
                    .where(r.id.in_(ids), r.lease_owner == worker_id)
                    .values(lease_expires_at=now + ttl)
                )
                rows = (
                    conn.execute(
                        select(r.id, r.lease_owner, r.attempt, r.requested).where(r.id.in_(ids))
                    )
                ).all()
                seen = set()
                for rid, lo, att, req in rows:
                    seen.add(rid)
                    if lo != worker_id or att != held[rid]:
                        lost.add(rid)
                    elif req:
                        requests[rid] = req
                lost.update(set(ids) - seen)

        await self._write(_tx)
        return lost, requests

    async def requests_for(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        r = S.runs.c

        def _tx(conn: Connection) -> dict[str, str]:
            rows = conn.execute(
                select(r.id, r.requested).where(r.id.in_(list(run_ids)), r.requested.is_not(None))
            ).all()
            return {rid: req for rid, req in rows}

        return await self._read(_tx)

    async def release(self, run_id: str, *, owner: str, attempt: int, now: float) -> None:
        """Give a lease back; a run that was mid-flight becomes pending for any worker."""
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.lease_owner == owner, r.attempt == attempt)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    status=case((r.status == RunStatus.RUNNING, RunStatus.PENDING), else_=r.status),
                    requested=case((r.requested == Request.HOLD, None), else_=r.requested),
                    updated_at=now,
                )
            )
            self._notify(conn, "run")

        return await self._write(_tx)
