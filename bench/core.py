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
        us = asyncio.run(per_step(url, a.steps, a.reps))
        print(
            f"{db:10} per step ({a.steps}-step run, {note}): median {statistics.median(us):.0f} µs  (min {min(us):.0f}, max {max(us):.0f})"
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
