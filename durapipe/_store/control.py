"""Steering runs: requests to whoever holds them, and acting on runs nobody holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.engine import Connection

from .._kinds import RunStatus
from . import journal_sql
from . import schema as S
from .base import StoreBase


class Control(StoreBase):
    """Stop, cancel and resume requests; ending or releasing a run a client acts on."""

    async def set_request(
        self, run_id: str, request: str | None, *, now: float, wake: bool = False
    ) -> None:
        """Record a request (stop, stop_now, cancel...) for whoever holds the run.

        A stop or cancel asked of a run its holder has meanwhile suspended (no lease, sleeping
        or waiting) also makes it due now, so a worker takes it and acts on the request instead
        of when its timer or input comes. The UPDATE locks the row as the suspending write
        does, which checks the request from its side (see ``Op.suspend``).
        """
        r = S.runs.c
        values: dict[str, Any] = {"requested": request, "updated_at": now}
        if wake:
            values["wake_at"] = now
        elif request in journal_sql.WAKING_REQUESTS:
            values["wake_at"] = case(
                (and_(r.lease_owner.is_(None), r.status.in_(S.SUSPENDABLE)), now),
                else_=r.wake_at,
            )

        def _tx(conn: Connection) -> Any:
            conn.execute(update(S.runs).where(S.runs.c.id == run_id).values(**values))
            self._notify(conn, "control")

        return await self._write(_tx)

    async def finish_unleased(
        self, run_id: str, *, status: str, event: dict[str, Any], now: float, expect: Iterable[str]
    ) -> bool:
        """End or stop a run nobody holds (a client acting on a suspended run).

        -> False (nothing written) when the run is not in a state of ``expect`` or a live lease
        holds it: a worker claimed it meanwhile. Like every write to a run's history, it first
        locks the run's row (FOR UPDATE; SQLite's write transaction is BEGIN IMMEDIATE), so no
        claim or leased append can slip between the check and the append of the next seq.
        Taking over an expired lease bumps the attempt, fencing off its holder's writes and
        log lines.
        """
        r = S.runs.c
        read = select(
            r.status, r.lease_owner, r.lease_expires_at, r.parent_run_id, r.attempt
        ).where(r.id == run_id)
        read = self._lock(read)

        def _tx(conn: Connection) -> Any:
            row = (conn.execute(read)).first()
            if row is None or row.status not in set(expect):
                return False
            if row.lease_owner is not None and (row.lease_expires_at or 0) >= now:
                return False
            attempt = int(row.attempt) + (1 if row.lease_owner is not None else 0)
            seq = (
                conn.execute(
                    select(func.coalesce(func.max(S.events.c.seq), 0)).where(
                        S.events.c.run_id == run_id
                    )
                )
            ).scalar_one()
            conn.execute(
                insert(S.events).values(
                    {**event, "run_id": run_id, "seq": int(seq) + 1, "at": now, "attempt": attempt}
                )
            )
            values: dict[str, Any] = {
                "attempt": attempt,
                "status": status,
                "updated_at": now,
                "requested": None,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if status in S.TERMINAL:
                values["finished_at"] = now
                values["wake_at"] = None
            conn.execute(update(S.runs).where(r.id == run_id).values(**values))
            if status in S.TERMINAL and row.parent_run_id:
                conn.execute(
                    update(S.runs)
                    .where(r.id == row.parent_run_id, r.status == RunStatus.WAITING)
                    .values(wake_at=now)
                )
            self._notify(conn, "run")
            return True

        return bool(await self._write(_tx))

    async def make_runnable(self, run_id: str, *, now: float, statuses: Iterable[str]) -> bool:
        """Release a stopped/failed/blocked/dead run to the workers (resume --detach)."""
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            res = conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.status.in_(list(statuses)))
                .values(
                    # A run of a queue goes back in line: it left its slot when it stopped.
                    status=case((r.queue.is_not(None), RunStatus.QUEUED), else_=RunStatus.PENDING),
                    requested=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    recoveries=0,  # resumed on purpose: a dead run's count starts again
                )
            )
            self._notify(conn, "run")
            return bool(res.rowcount)

        return await self._write(_tx)
