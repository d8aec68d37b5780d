"""Runs a page at a time, for the web UI: keyset paging, newest first, with the list's filters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection, Row

from . import schema as S
from .base import StoreBase


class Pages(StoreBase):
    """Pages of runs. A page starts below the (created_at, id) of the last run of the page
    before: a keyset, so page 1,000 costs what page 1 does (no OFFSET that scans what it skips)."""

    async def page_runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        since: float | None = None,
        until: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
        tags: dict[str, str] | None = None,
    ) -> list[Row[Any]]:
        """Runs newest first (``created_at`` then ``id``, as ``list_runs``), created in
        ``[since, until)``, older than the run ``before`` = (created_at, id), with all ``tags``."""
        r = S.runs.c
        q = select(S.runs)
        if status:
            q = q.where(r.status == status)
        if pipeline:
            q = q.where(r.pipeline == pipeline)
        if roots_only:
            q = q.where(r.parent_run_id.is_(None))
        if since is not None:
            q = q.where(r.created_at >= since)
        if until is not None:
            q = q.where(r.created_at < until)
        if before is not None:
            at, rid = before
            q = q.where(or_(r.created_at < at, and_(r.created_at == at, r.id < rid)))
        # Tags AND together, as list_runs: one lookup per tag on the tags' (key, value) index.
        for key, value in (tags or {}).items():
            t = S.tags.c
            q = q.where(r.id.in_(select(t.run_id).where(t.key == key, t.value == value)))
        q = q.order_by(r.created_at.desc(), r.id.desc()).limit(limit)

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)
