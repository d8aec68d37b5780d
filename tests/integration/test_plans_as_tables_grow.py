"""Statements planned while a new database's tables are near empty keep finding rows by key once
the tables are large (bench/wake.py: 10,000 runs woke seconds late on a new database because
the lease check and the history read scanned whole tables with plans made at the start).

PostgreSQL only: SQLite plans each statement when it is prepared, with no generic plan kept
across executions, so it has no such case to test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio

LEASE_CHECK = (
    "SELECT id, lease_owner, attempt, requested FROM durapipe_runs WHERE id = ANY($1::varchar[])"
)
HISTORY = (
    "SELECT run_id, seq FROM durapipe_events WHERE run_id IN ($1, $2, $3) ORDER BY run_id, seq"
)


async def _fill(conn: Any, runs: int) -> None:
    now = time.time()
    await conn.execute(
        """
        INSERT INTO durapipe_runs (id, pipeline, version, entrypoint, pinned, status, inputs,
                                   root_run_id, depth, prefix, created_at, updated_at, attempt)
        SELECT 'grow-' || g, 'p', '1', 'm:p', false, 'completed', '{}', 'grow-' || g, 0, 'p',
               $1, $1, 1
        FROM generate_series(1, $2) AS g
        """,
        now,
        runs,
    )
    await conn.execute(
        """
        INSERT INTO durapipe_events (run_id, seq, kind, at, attempt)
        SELECT 'grow-' || g, s, 'step_completed', $1, 1
        FROM generate_series(1, $2) AS g, generate_series(1, 4) AS s
        """,
        now,
        runs,
    )


async def _plan_after_growth(conn: Any, sql: str, args: str, warm: str) -> str:
    """The plan PostgreSQL uses for ``sql`` on ``conn``, prepared and run on empty tables (more
    times than it takes to settle on a generic plan), after the tables grew."""
    await conn.execute(f"PREPARE grown AS {sql}")
    for _ in range(8):
        await conn.execute(f"EXECUTE grown{warm}")
    await _fill(conn, 20_000)
    rows = await conn.fetch(f"EXPLAIN EXECUTE grown{args}")
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("which", ["journal", "engine"])
async def test_key_lookups_keep_their_index_once_the_tables_are_large(
    store: Any, which: str
) -> None:
    if which == "journal":  # the connection the per-step writes use: the lease check
        conn = await store.db._journal_conn()
        plan = await _plan_after_growth(
            conn, LEASE_CHECK, "(ARRAY['grow-7', 'grow-9'])", "(ARRAY['x', 'y'])"
        )
    else:  # the pool's (claims, their history reads, the client)
        async with store.db.writer.connect() as c:
            raw = await c.get_raw_connection()
            conn = raw.driver_connection
            plan = await _plan_after_growth(
                conn, HISTORY, "('grow-7', 'grow-8', 'grow-9')", "('x', 'y', 'z')"
            )
            await conn.execute("DEALLOCATE grown")
            await c.rollback()
    assert "Seq Scan" not in plan, plan
