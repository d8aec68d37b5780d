"""Fork and edit (durapipe fork / edit): a new run from part of a history, an appended edit.

Neither rewrites history: a fork inserts a new run with copies of events, an edit appends one
event. Each is one transaction that first locks the source run's row (FOR UPDATE; SQLite's write
transaction is BEGIN IMMEDIATE), so no claim or append can slip between the checks and the write.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from . import schema as S
from .base import StoreBase

_RUN_FIELDS = tuple(c.name for c in S.runs.c)


class Forks(StoreBase):
    """Forking runs, appending edits, and reading the links between forks."""

    def _check_source(
        self, conn: Connection, run_id: str, *, now: float, last_seq: int
    ) -> tuple[Any, str | None]:
        """Lock the run's row: -> (row, None) or (row, why not: gone, held, changed)."""
        r = S.runs.c
        row = conn.execute(self._lock(select(S.runs).where(r.id == run_id))).first()
        if row is None:
            return None, "gone"
        if row.lease_owner is not None and (row.lease_expires_at or 0) >= now:
            return row, "held"
        seq = conn.execute(
            select(func.coalesce(func.max(S.events.c.seq), 0)).where(S.events.c.run_id == run_id)
        ).scalar_one()
        if int(seq) != last_seq:
            return row, "changed"
        return row, None

    async def fork_run(
        self,
        *,
        source_run_id: str,
        source_last_seq: int,
        row: dict[str, Any],
        events: list[dict[str, Any]],
        link: dict[str, Any],
        now: float,
    ) -> str | None:
        """Insert the forked run ``row`` with its ``events`` and its ``link`` to the source, in
        one transaction. -> None when written, else why nothing was: ``gone`` (no source),
        ``held`` (a live lease holds the source), ``changed`` (the source's history grew since
        it was read), ``exists`` (a run with the new id exists)."""
        full = {c: row.get(c) for c in _RUN_FIELDS}

        def _tx(conn: Connection) -> str | None:
            _, why = self._check_source(conn, source_run_id, now=now, last_seq=source_last_seq)
            if why is not None:
                return why
            if conn.execute(select(S.runs.c.id).where(S.runs.c.id == full["id"])).first():
                return "exists"
            conn.execute(insert(S.runs).values(full))
            if events:
                conn.execute(insert(S.events), events)
            conn.execute(insert(S.forks).values(link))
            self._notify(conn, "run")
            return None

        return await self._write(_tx)

    async def append_edit(
        self,
        run_id: str,
        event: dict[str, Any],
        *,
        statuses: tuple[str, ...],
        last_seq: int,
        now: float,
    ) -> str | None:
        """Append an edit event to a run nobody holds whose status is one of ``statuses`` and
        whose history is still ``last_seq`` events long. -> None when written, else why not:
        ``gone``, ``held``, ``changed``, or the run's status."""

        def _tx(conn: Connection) -> str | None:
            row, why = self._check_source(conn, run_id, now=now, last_seq=last_seq)
            if why is not None:
                return why
            if row.status not in statuses:
                return str(row.status)
            conn.execute(insert(S.events).values({**event, "run_id": run_id, "seq": last_seq + 1}))
            conn.execute(update(S.runs).where(S.runs.c.id == run_id).values(updated_at=now))
            self._notify(conn, "run")
            return None

        return await self._write(_tx)

    async def fork_links(self, run_id: str) -> tuple[Row[Any] | None, list[Row[Any]]]:
        """-> (the link of the run it was forked from, or None; the links of its forks)."""
        f = S.forks.c

        def _tx(conn: Connection) -> Any:
            source = conn.execute(select(S.forks).where(f.run_id == run_id)).first()
            forks = conn.execute(
                select(S.forks).where(f.source_run_id == run_id).order_by(f.created_at)
            ).all()
            return source, list(forks)

        return await self._read(_tx)
