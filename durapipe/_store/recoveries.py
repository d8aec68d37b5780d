"""What ending a run ``dead`` reads: the log lines of its executions that died."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from . import journal_sql
from . import schema as S
from .base import StoreBase


class Recoveries(StoreBase):
    """The recovery limit's reads (the count itself is kept by the claims)."""

    async def last_log_lines(
        self, run_id: str, *, before_attempt: int, limit: int = 20
    ) -> list[journal_sql.LogLine]:
        """The last ``limit`` log lines of run ``run_id`` written by executions before
        ``before_attempt`` (what its last execution said before it died), oldest first."""
        c = S.logs.c

        def _tx(conn: Connection) -> Any:
            q = (
                select(S.logs)
                .where(c.run_id == run_id, c.attempt < before_attempt)
                .order_by(c.id.desc())
                .limit(limit)
            )
            rows = list(reversed(conn.execute(q).all()))
            return journal_sql.log_lines(rows)[-limit:]

        return await self._read(_tx)
