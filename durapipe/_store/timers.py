"""Timers due soon: which are coming due, and taking them by id just before their time."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, select, update
from sqlalchemy.engine import Connection

from .._kinds import RunStatus
from . import schema as S
from .claims import Claimed, ClaimFilter, Claims, _histories, _recovered


class DueTimers(Claims):
    """The worker's look ahead at suspended runs' timers (``durapipe._worker.timers``)."""

    async def upcoming_timers(
        self, *, flt: ClaimFilter, until: float, limit: int
    ) -> list[tuple[str, float]]:
        """The suspended runs this worker could take whose wake time is at most ``until`` (due
        ones included), earliest first: ``(run_id, wake_at)``. A read of the (status, wake_at)
        index, nothing taken: a worker keeps them to claim each just before it is due."""
        r = S.runs.c
        q = (
            select(r.id, r.wake_at)
            .where(
                r.status.in_(S.SUSPENDABLE),
                r.lease_owner.is_(None),
                r.wake_at <= until,
                *self._claimable(flt),
            )
            .order_by(r.wake_at, r.id)
            .limit(limit)
        )

        def _tx(conn: Connection) -> list[tuple[str, float]]:
            return [(rid, float(at)) for rid, at in conn.execute(q)]

        return await self._read(_tx)

    async def claim_timers(
        self,
        run_ids: Sequence[str],
        *,
        owner: str,
        flt: ClaimFilter,
        ttl: float,
        now: float,
        due_by: float,
    ) -> Claimed:
        """Take the leases of these suspended runs (from :meth:`upcoming_timers`) whose wake
        time is at most ``due_by``, by id: no scan of the other runnable runs.

        Everything :meth:`claim` checks is checked again here, in the statement that takes them
        (still suspended, nobody's lease, not held, this worker's pipelines), so a run another
        worker took, or one cancelled or held meanwhile, is simply not taken. A run taken before
        its time (``due_by`` > ``now``) keeps its status: it sleeps the rest in the worker's
        memory, leased like a short sleep, and is running once its timer fires.
        """
        if not run_ids:
            return Claimed([], {}, None)
        r = S.runs.c
        pick = (
            select(r.id)
            .where(
                r.id.in_(list(run_ids)),
                r.status.in_(S.SUSPENDABLE),
                r.lease_owner.is_(None),
                r.wake_at <= due_by,
                *self._claimable(flt),
            )
            .order_by(r.wake_at, r.id)
        )
        pick = self._lock(pick, skip_locked=True)
        stmt = (
            update(S.runs)
            .where(r.id.in_(pick.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status=case((r.wake_at > now, r.status), else_=RunStatus.RUNNING),
                updated_at=now,
                recoveries=_recovered(owner),
            )
            .returning(*S.runs.c)
        )

        def _tx(conn: Connection) -> Claimed:
            rows = sorted(conn.execute(stmt).all(), key=lambda row: (row.wake_at, row.id))
            return Claimed(rows, _histories(conn, rows), None)

        return await self._write(_tx)
