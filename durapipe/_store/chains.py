"""Continue-as-new chains and tags: finding a chain's live link, a run's successor, its tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from .._kinds import RunStatus
from . import schema as S
from .base import StoreBase


class Chains(StoreBase):
    """Reading continue-as-new chains and run tags (their writes go through the journal)."""

    async def live_link(self, run_id: str) -> Row[Any] | None:
        """The run a continue-as-new chain has reached from ``run_id``: the run itself unless
        it has continued, else the one link of its chain that has not (None: no such run)."""
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            row = conn.execute(select(S.runs).where(r.id == run_id)).first()
            if row is None or row.status != RunStatus.CONTINUED or row.chain_id is None:
                return row
            live = conn.execute(
                select(S.runs)
                .where(r.chain_id == row.chain_id, r.status != RunStatus.CONTINUED)
                .order_by(r.created_at.desc())
                .limit(1)
            ).first()
            return live if live is not None else row

        return await self._read(_tx)

    async def live_links(self, run_ids: Sequence[str]) -> dict[str, Row[Any]]:
        """:meth:`live_link` of many runs in one read: by the id asked for, each run or, if it
        has continued as new, its chain's live link (ids of no run are left out). A parent
        waiting for thousands of children asks for all of them at once (``Runner``)."""
        r = S.runs.c
        ids = list(dict.fromkeys(run_ids))

        def _tx(conn: Connection) -> Any:
            out: dict[str, Any] = {}
            for i in range(0, len(ids), 500):
                for row in conn.execute(select(S.runs).where(r.id.in_(ids[i : i + 500]))).all():
                    out[row.id] = row
            for rid, row in list(out.items()):  # rare: a child that continued as new
                if row.status != RunStatus.CONTINUED or row.chain_id is None:
                    continue
                live = conn.execute(
                    select(S.runs)
                    .where(r.chain_id == row.chain_id, r.status != RunStatus.CONTINUED)
                    .order_by(r.created_at.desc())
                    .limit(1)
                ).first()
                if live is not None:
                    out[rid] = live
            return out

        return await self._read(_tx)

    async def successor(self, run_id: str, chain_id: str) -> str | None:
        """The run that continues ``run_id`` (in its chain ``chain_id``), if any."""
        r = S.runs.c
        q = select(r.id).where(r.chain_id == chain_id, r.continued_from == run_id)

        def _tx(conn: Connection) -> Any:
            return conn.execute(q).scalar()

        return await self._read(_tx)

    async def tags_of(self, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The tags of these runs, by run id (runs without tags are left out)."""
        out: dict[str, dict[str, str]] = {}
        if not run_ids:
            return out
        t = S.tags.c

        def _tx(conn: Connection) -> Any:
            ids = list(run_ids)
            for i in range(0, len(ids), 500):
                q = select(t.run_id, t.key, t.value).where(t.run_id.in_(ids[i : i + 500]))
                for rid, key, value in conn.execute(q).all():
                    out.setdefault(rid, {})[key] = value
            return out

        return await self._read(_tx)
