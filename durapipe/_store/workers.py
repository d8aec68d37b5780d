"""Workers (who is alive, on which host, holding what) and holds of pipelines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row

from . import schema as S
from .base import StoreBase


class Workers(StoreBase):
    """The workers' rows, and holds that keep a pipeline's runs from being claimed."""

    # ------------------------------------------------------------------ workers

    async def register_worker(self, row: dict[str, Any]) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(insert(S.workers).values(**row))

        return await self._write(_tx)

    async def stop_worker(self, worker_id: str, *, now: float) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.workers).where(S.workers.c.id == worker_id).values(stopped_at=now)
            )

        return await self._write(_tx)

    async def live_workers(self, *, now: float, stale_after: float) -> list[Row[Any]]:
        w = S.workers.c
        q = (
            select(S.workers)
            .where(w.stopped_at.is_(None), w.heartbeat_at >= now - stale_after)
            .order_by(w.started_at)
        )

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    async def lease_holders(self, root_run_id: str) -> list[Row[Any]]:
        """The workers holding leases in the run tree ``root_run_id`` (by their worker rows)."""
        r, w = S.runs.c, S.workers.c
        held = select(r.lease_owner).where(r.root_run_id == root_run_id, r.lease_owner.is_not(None))
        q = select(S.workers).where(w.id.in_(held))

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    async def get_worker(self, worker_id: str) -> Row[Any] | None:
        def _tx(conn: Connection) -> Any:
            return (conn.execute(select(S.workers).where(S.workers.c.id == worker_id))).first()

        return await self._read(_tx)

    async def held_counts(self) -> dict[str, int]:
        r = S.runs.c
        q = (
            select(r.lease_owner, func.count())
            .where(r.lease_owner.is_not(None))
            .group_by(r.lease_owner)
        )

        def _tx(conn: Connection) -> Any:
            return {str(o): int(n) for o, n in (conn.execute(q)).all()}

        return await self._read(_tx)

    # ------------------------------------------------------------------ holds

    async def hold(self, pipeline: str, version: str | None, *, now: float) -> None:
        def _tx(conn: Connection) -> Any:
            exists = (
                conn.execute(
                    select(S.holds.c.pipeline).where(
                        S.holds.c.pipeline == pipeline, S.holds.c.version == (version or "")
                    )
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(S.holds).values(pipeline=pipeline, version=version or "", created_at=now)
                )

        return await self._write(_tx)

    async def holds(self) -> list[Row[Any]]:
        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(select(S.holds)).all())

        return await self._read(_tx)

    async def request_for_pipeline(
        self, pipeline: str, version: str | None, request: str, *, now: float
    ) -> int:
        """Ask every leased, unfinished run of a pipeline to ``request`` (e.g. hold)."""
        r = S.runs.c

        def _tx(conn: Connection) -> int:
            q = update(S.runs).where(
                r.pipeline == pipeline,
                r.status.in_(S.ACTIVE),
                r.lease_owner.is_not(None),
                r.requested.is_(None),
            )
            if version:
                q = q.where(r.version == version)
            res = conn.execute(q.values(requested=request, updated_at=now))
            self._notify(conn, "control")
            return int(res.rowcount)

        return await self._write(_tx)

    async def unhold(self, pipeline: str, version: str | None = None) -> int:
        """Release the holds of ``pipeline`` (only the hold of ``version`` when given)."""
        q = delete(S.holds).where(S.holds.c.pipeline == pipeline)
        if version is not None:
            q = q.where(S.holds.c.version == version)

        def _tx(conn: Connection) -> Any:
            res = conn.execute(q)
            self._notify(conn, "run")
            return int(res.rowcount)

        return await self._write(_tx)
