"""Latency from Client.start to the run's first step, with an idle worker waiting (PostgreSQL: LISTEN/NOTIFY).

python bench/latency.py [--db postgresql|sqlite] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PIPE = """
import durapipe as dp

@dp.step
def first() -> float:
    import time
    return time.time()

@dp.pipeline(name="ping", version="1")
async def ping() -> float:
    return await first()
"""


async def measure(url: str, runs: int, work: str) -> list[float]:
    import durapipe as dp
    from durapipe._definition import load_target

    pdef = load_target(f"{work}/ping.py:ping")
    out = []
    async with await dp.Client.connect(url) as c:
        for _ in range(runs):
            t0 = time.time()
            rid = await c.start(pdef)
            first_step_at = await c.result(rid, timeout=30, poll=0.005)
            out.append(first_step_at - t0)
            await asyncio.sleep(0.05)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="postgresql", choices=["postgresql", "sqlite"])
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    Path(work, "ping.py").write_text(PIPE)
    cluster = None
    if a.db == "postgresql":
        url = os.environ.get("DURAPIPE_BENCH_PG_URL")
        if not url:
            from pgcluster import PgCluster

            cluster = PgCluster(durable=True)
            url = cluster.start()
    else:
        url = f"sqlite:///{work}/lat.db"
    env = dict(os.environ, DURAPIPE_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "durapipe", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "durapipe", "worker", "-m", f"{work}/ping.py"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker.stderr.readline()  # type: ignore[union-attr]  # "worker ... carrying ..." = ready
        time.sleep(1.0)
        lat = asyncio.run(measure(url, a.runs, work))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
    lat.sort()
    poll = "LISTEN/NOTIFY" if a.db == "postgresql" else "PRAGMA data_version watched every 50 ms"
    print(
        f"{a.db} ({poll}): start -> first step, {a.runs} runs: p50 {statistics.median(lat) * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
