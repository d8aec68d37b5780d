"""Runs a page at a time, for the web UI: keyset paging, newest first, with the list's filters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, func, or_, select
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
        q = q.order_by(r.created_at.desc(), r.id.desc()).limit(limit)

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(with_tags(conn, q, tags)).all())

        return await self._read(_tx)


# A tag with fewer runs than this is looked up by its (key, value) index, the runs by id;
# one with more is checked run by run while the newest are read (by their primary key).
FEW = 5000


def with_tags(conn: Connection, q: Select[Any], tags: dict[str, str] | None) -> Select[Any]:
    """``q`` limited to the runs with all ``tags``, each tag looked up the way that is fast for
    how many runs have it. Runs by id from the tag's index is fast for a rare tag but reads every
    run of a common one (SQLite builds the whole list first: a second for 500,000 runs); checking
    each run while the page is read, newest first, stops after a page for a common tag but reads
    every run for a rare one. A count of the tag's runs, stopped at ``FEW``, decides (PostgreSQL's
    planner makes the same choice from its statistics; the count costs it little)."""
    t = S.tags.c
    for key, value in (tags or {}).items():
        match = (t.key == key, t.value == value)
        few = select(t.run_id).where(*match)
        n = conn.execute(select(func.count()).select_from(few.limit(FEW).subquery())).scalar_one()
        if n < FEW:
            q = q.where(S.runs.c.id.in_(few))
        else:
            q = q.where(select(t.run_id).where(t.run_id == S.runs.c.id, *match).exists())
    return q
