"""Core hot path: µs per trivial step (1,000-step run) and resume time of long histories.

    python bench/core.py --db sqlite --db postgresql [--steps 1000] [--resume 1000,10000]

PostgreSQL comes from DURAPIPE_BENCH_PG_URL, or a throwaway cluster (tests/pgcluster.py) with
the server's default durability (fsync on, synchronous_commit on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import durapipe as dp  # noqa: E402
from durapipe._store import open_store  # noqa: E402
from durapipe.testing import resume_run, run_pipeline  # noqa: E402

FAIL_AT_END = {"on": False}


@dp.step
async def trivial(i: int) -> int:
    return i


@dp.pipeline(name="bench_steps", version="1")
async def many_steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await trivial(i)
    if FAIL_AT_END["on"]:
        raise RuntimeError("stop here so the run can be resumed")
    return total


async def per_step(url: str, n: int, reps: int) -> list[float]:
    out = []
    store = await open_store(url, migrate=True)
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            view = await run_pipeline(store, many_steps, n=n)
            dt = time.perf_counter() - t0
            assert view.status == "completed", view.error
            out.append(dt / n * 1e6)
    finally:
        await store.close()
    return out


async def resume_time(url: str, n: int, reps: int) -> list[float]:
    out = []
    store = await open_store(url, migrate=True)
    try:
        for _ in range(reps):
            FAIL_AT_END["on"] = True
            view = await run_pipeline(store, many_steps, n=n)
            assert view.status == "failed"
            FAIL_AT_END["on"] = False
            t0 = time.perf_counter()
            view = await resume_run(store, many_steps, view.run_id)
            out.append(time.perf_counter() - t0)
            assert view.status == "completed", view.error
    finally:
        await store.close()
    return out


async def floor(url: str, n: int) -> float:
    """µs per bare one-row INSERT + COMMIT on the same database and settings: the disk's price
    of one durable transaction, which a journaled step cannot go below."""
    import sqlite3

    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1] + ".floor"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={os.environ.get('DURAPIPE_SQLITE_SYNCHRONOUS', 'FULL')}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (f'{{"result": {i}}}',))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        conn.close()
        return dt / n * 1e6
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        await pg.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id serial PRIMARY KEY, data text)"
        )
        t0 = time.perf_counter()
        for i in range(n):
            await pg.execute("INSERT INTO bench_floor (data) VALUES ($1)", f'{{"result": {i}}}')
        dt = time.perf_counter() - t0
    finally:
        await pg.close()
    return dt / n * 1e6


def pg_url() -> tuple[str, Any]:
    url = os.environ.get("DURAPIPE_BENCH_PG_URL")
    if url:
        return url, None
    from pgcluster import PgCluster

    c = PgCluster(durable=True)
    c.start()
    return c.url, c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--resume", default="1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    dbs = a.db or ["sqlite", "postgresql"]
    cluster = None
    for db in dbs:
        if db == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            note = f"WAL, synchronous={os.environ.get('DURAPIPE_SQLITE_SYNCHRONOUS', 'FULL')}"
        else:
            url, cluster = pg_url()
            note = "server defaults"
        us, fl = [], []
        for _ in range(a.reps):  # interleaved, so both see the same disk
            fl.append(asyncio.run(floor(url, a.steps)))
            us += asyncio.run(per_step(url, a.steps, 1))
        print(
            f"{db:10} per step ({a.steps}-step run, {note}): median {statistics.median(us):.0f} µs  (min {min(us):.0f}, max {max(us):.0f})"
        )
        print(
            f"{db:10} floor: bare INSERT+COMMIT, same database: median {statistics.median(fl):.0f} µs"
            f"  (min {min(fl):.0f}, max {max(fl):.0f}); step above floor: "
            f"{statistics.median(us) - statistics.median(fl):.0f} µs"
        )
        for n in [int(x) for x in a.resume.split(",") if x]:
            ts = asyncio.run(resume_time(url, n, a.reps))
            print(
                f"{db:10} resume of {n:>6} recorded steps: median {statistics.median(ts) * 1000:.0f} ms  (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f})"
            )
    if cluster is not None:
        cluster.stop()


if __name__ == "__main__":
    main()
