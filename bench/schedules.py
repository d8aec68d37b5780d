"""Schedule fire delay: how late each tick's run is created, with many schedules due at once.

python bench/schedules.py [--db postgresql|sqlite] [--schedules 1000] [--period 60] [--rounds 2]
                          [--workers 2]

``--schedules`` schedules of ``Every(period)`` all tick on the same instants (every multiple of
the period since the epoch): each round, every one of them is due at the same moment, the
hardest case for the firers. The delay of a tick is its run's ``created_at`` minus its
``scheduled_at`` (the run is created in the transaction that advances the schedule). The
workers also execute the runs (a trivial pipeline). A shorter ``--period`` keeps the burst and
raises the load (1,000 every 20 s is three times "1,000 a minute").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from benchlib import pct  # noqa: E402

PIPE = """
import durapipe as dp

@dp.pipeline(name="beat", version="1")
async def beat() -> int:
    return 1
"""


async def setup(url: str, n: int, period: int, work: str) -> float:
    import durapipe as dp
    from durapipe import _schedules as sch
    from durapipe._definition import load_target
    from durapipe._store import open_store
    from durapipe._store import schema as S

    pdef = load_target(f"{work}/beat.py:beat")
    store = await open_store(url, migrate=True)
    now = time.time()
    spec = dp.Every(period, overlap="allow", catch_up="none")
    for i in range(n):
        row = sch.schedule_row(
            name=f"s{i:05d}",
            pipeline=pdef.name,
            target=pdef.entrypoint,
            schedule=spec,
            inputs="{}",
            source="api",
            now=now,
        )
        await store.add_schedule(row)
    # All tick on the same instants; the first a few seconds after the workers have started.
    first = sch.next_tick("every", str(period), "UTC", time.time() + 8)

    def _tx(conn: Any) -> None:
        conn.execute(S.schedules.update().values(next_fire_at=first))

    await store._write(_tx)
    await store.close()
    return first


async def delays(url: str) -> list[tuple[float, float]]:
    import durapipe as dp

    async with await dp.Client.connect(url) as c:
        views = await c.list(limit=1_000_000)
    return [(v.scheduled_at, v.created_at) for v in views if v.scheduled_at is not None]


async def pause_all(url: str) -> None:
    from durapipe._store import open_store
    from durapipe._store import schema as S

    store = await open_store(url)

    def _tx(conn: object) -> None:
        conn.execute(S.schedules.update().values(paused=True))  # type: ignore[attr-defined]

    await store._write(_tx)
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="postgresql", choices=["postgresql", "sqlite"])
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--period", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    Path(work, "beat.py").write_text(PIPE)
    cluster = None
    if a.db == "postgresql":
        url = os.environ.get("DURAPIPE_BENCH_PG_URL")
        if not url:
            from pgcluster import PgCluster

            cluster = PgCluster(durable=True)
            url = cluster.start()
    else:
        url = f"sqlite:///{work}/sched.db"
    env = dict(os.environ, DURAPIPE_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    workers: list[subprocess.Popen[str]] = []
    try:
        first = asyncio.run(setup(url, a.schedules, a.period, work))
        for _ in range(a.workers):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "durapipe", "worker", "-m", f"{work}/beat.py"],
                    env=env,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        end = first + (a.rounds - 1) * a.period
        while time.time() < end + min(a.period / 2, 10):
            time.sleep(0.5)
        asyncio.run(pause_all(url))
        got = asyncio.run(delays(url))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        if cluster is not None:
            cluster.stop()
    ticks = sorted({s for s, _ in got})
    lat = sorted(c - s for s, c in got)
    per_tick = [max(c - s for s, c in got if s == t) for t in ticks]
    print(
        f"{a.db}: {a.schedules} schedules every {a.period}s, {len(ticks)} rounds, "
        f"{a.workers} workers: {len(got)} runs (expected {a.schedules * len(ticks)}); "
        f"fire delay p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms; last of a round "
        + ", ".join(f"{x * 1000:.0f} ms" for x in per_tick)
    )


if __name__ == "__main__":
    main()
