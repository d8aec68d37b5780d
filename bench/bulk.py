"""Bulk loading for the benchmarks: rows straight into durapipe's tables with plain SQL (bench/
may; durapipe/ may not): COPY on PostgreSQL (asyncpg ``copy_records_to_table``), executemany in
one transaction with ``synchronous=OFF`` on SQLite. Used by bench/ui.py and bench/history.py."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

# The columns of a run the loaders fill (the rest keep their defaults / NULL).
RUN_COLS = [
    "id", "pipeline", "version", "entrypoint", "pinned", "status", "inputs", "output",
    "root_run_id", "depth", "prefix", "created_at", "updated_at", "finished_at", "attempt",
]  # fmt: skip
EVENT_COLS = ["run_id", "seq", "kind", "step", "name", "label", "at", "attempt", "data"]
LOG_COLS = ["run_id", "root_run_id", "step", "prefix", "stream", "at", "line", "attempt"]
TAG_COLS = ["run_id", "key", "value"]

Table = tuple[str, list[str], Iterable[tuple[Any, ...]]]


async def migrate(url: str) -> None:
    """Create durapipe's tables (the store's own migrations)."""
    from durapipe._store import open_store

    store = await open_store(url, migrate=True)
    await store.close()


async def load(url: str, tables: list[Table]) -> float:
    """Insert ``(table, columns, rows)`` in order, then ANALYZE (PostgreSQL: VACUUM ANALYZE);
    -> seconds it took. ``rows`` may be generators: they are streamed, never held in memory whole.

    PostgreSQL: a table loaded by COPY a moment ago has no page marked all-visible yet, so every
    index-only scan also reads the table's rows, until autovacuum has been through it (minutes,
    for 10,000,000 events). A year of history has been vacuumed many times over; measuring
    before that ran made the capped counts of `durapipe list` 25 ms instead of 4 ms."""
    t0 = time.perf_counter()
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            for table, cols, rows in tables:
                await conn.copy_records_to_table(table, records=rows, columns=cols)
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
    else:
        import sqlite3

        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            db.execute("PRAGMA synchronous=OFF")  # a loader's shortcut; the bench runs with FULL
            for table, cols, rows in tables:
                marks = ", ".join("?" for _ in cols)
                db.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
            db.commit()
            db.execute("ANALYZE")
        finally:
            db.close()
    return time.perf_counter() - t0
