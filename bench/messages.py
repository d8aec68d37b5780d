"""Message round trips: two runs exchanging pings and pongs (dp.send / dp.recv) on one worker,
and Client.send -> dp.recv -> dp.set_event -> Client.get_event(wait=) from outside.

python bench/messages.py [--db postgresql|sqlite] [--rounds 200]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))  # this checkout's durapipe, whatever is installed

PIPE = """
import durapipe as dp

@dp.pipeline(version="1")
async def pinger(peer: str, rounds: int) -> int:
    me = dp.context().run_id
    for i in range(rounds):
        await dp.send(peer, "ping", {"i": i, "from": me})
        await dp.recv("pong")
    return rounds

@dp.pipeline(version="1")
async def ponger(rounds: int) -> int:
    for _ in range(rounds):
        m = await dp.recv("ping")
        await dp.send(m["from"], "pong", m["i"])
    return rounds

@dp.pipeline(version="1")
async def echo(rounds: int) -> int:
    for i in range(rounds):
        v = await dp.recv("q")
        await dp.set_event(f"a{i}", v)
    return rounds
"""


async def measure(url: str, rounds: int, work: str) -> tuple[float, list[float]]:
    import durapipe as dp
    from durapipe._definition import load_target

    ping, pong, echo = (load_target(f"{work}/msgs.py:{n}") for n in ("pinger", "ponger", "echo"))
    async with await dp.Client.connect(url) as c:
        t0 = time.perf_counter()
        b = await c.start(pong, rounds=rounds)
        a = await c.start(ping, peer=b, rounds=rounds)
        await c.result(a, timeout=600, poll=0.01)
        pingpong = time.perf_counter() - t0
        e = await c.start(echo, rounds=rounds // 4)
        trips = []
        for i in range(rounds // 4):
            t = time.perf_counter()
            await c.send(e, "q", i)
            await c.get_event(e, f"a{i}", wait=30)
            trips.append(time.perf_counter() - t)
    return pingpong, sorted(trips)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="postgresql", choices=["postgresql", "sqlite"])
    ap.add_argument("--rounds", type=int, default=200)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    Path(work, "msgs.py").write_text(PIPE)
    cluster = None
    if a.db == "postgresql":
        url = os.environ.get("DURAPIPE_BENCH_PG_URL")
        if not url:
            from pgcluster import PgCluster

            cluster = PgCluster(durable=True)
            url = cluster.start()
    else:
        url = f"sqlite:///{work}/msgs.db"
    env = dict(os.environ, DURAPIPE_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "durapipe", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "durapipe", "worker", "-m", f"{work}/msgs.py"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker.stderr.readline()  # type: ignore[union-attr]  # "worker ... carrying ..." = ready
        time.sleep(1.0)
        pingpong, trips = asyncio.run(measure(url, a.rounds, work))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
    p50 = trips[len(trips) // 2] * 1000
    print(
        f"{a.db}: {a.rounds} ping-pong rounds between two runs in {pingpong:.2f}s "
        f"({pingpong / a.rounds * 1000:.1f} ms a round, 2 messages); "
        f"Client.send -> recv -> set_event -> get_event(wait=): p50 {p50:.1f} ms, "
        f"max {trips[-1] * 1000:.1f} ms ({len(trips)} trips)"
    )


if __name__ == "__main__":
    main()
