"""Runs a page at a time, for the web UI: keyset paging, newest first, with the list's filters;
and the counts by status under a list or a page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, func, literal, or_, select, union_all
from sqlalchemy.engine import Connection, Row

from .._kinds import RunStatus
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

    async def count_by_status(
        self,
        *,
        pipeline: str | None = None,
        roots_only: bool = False,
        statuses: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
        cap: int | None = None,
    ) -> dict[str, int]:
        """How many runs there are of each status (those with none are left out).

        ``cap``: count each status only up to ``cap + 1`` (a count of ``cap + 1`` means "more
        than ``cap``"). An exact count reads every run of the status: 1,000,000 finished runs
        are a 150 ms scan on PostgreSQL, paid by every `durapipe list`; capped, each status
        reads at most ``cap + 1`` index entries, so the cost stops growing with the history.
        """
        r = S.runs.c
        conds: list[Any] = []
        for key, value in (tags or {}).items():  # as list_runs: all of them
            t = S.tags.c
            conds.append(r.id.in_(select(t.run_id).where(t.key == key, t.value == value)))
        if pipeline:
            conds.append(r.pipeline == pipeline)
        if roots_only:
            conds.append(r.parent_run_id.is_(None))
        wanted = [str(s) for s in (statuses if statuses is not None else RunStatus)]
        if cap is None:
            q: Any = (
                select(r.status, func.count())
                .where(r.status.in_(wanted), *conds)
                .group_by(r.status)
            )
        else:  # one bounded count per status, in one statement
            q = union_all(
                *(
                    select(
                        literal(s).label("status"),
                        select(func.count())
                        .select_from(
                            # the status, not the id: the status indexes carry it, so a
                            # count reads index entries only (SQLite read each row for its id)
                            select(r.status).where(r.status == s, *conds).limit(cap + 1).subquery()
                        )
                        .scalar_subquery(),
                    )
                    for s in wanted
                )
            )

        def _tx(conn: Connection) -> Any:
            return {str(s): int(n) for s, n in (conn.execute(q)).all() if n}

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
