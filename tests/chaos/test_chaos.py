"""Chaos: workers SIGKILLed and restarted at random while a few hundred mixed runs go through.

CI runs a short bounded version; `CHAOS_SECONDS=120 CHAOS_RUNS=400 pytest tests/chaos -m slow`
runs a long one. Every loop here is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, side_effects, wait_until

HERE = Path(__file__).resolve().parent
PIPES = str(HERE / "chaos_pipelines.py")


def _spawn_worker(db_url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = cli_env(
        db_url, SIDE_DIR=str(tmp_path), DURAPIPE_LEASE_TTL="1.5", DURAPIPE_POLL_INTERVAL="0.1"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "durapipe",
            "worker",
            "-m",
            PIPES,
            "--concurrency",
            "40",
            "--suspend-after",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
    )


async def _queue(db_url: str, n: int) -> list[str]:
    import durapipe as dp
    from durapipe._definition import load_target

    pdef = load_target(f"{PIPES}:chaos")
    async with await dp.Client.connect(db_url) as c:
        ids = [await c.start(pdef, i=i) for i in range(n)]
        for i, rid in enumerate(ids):
            if i % 3 == 0:  # sent before the pipeline asks: kept until it does
                await c.store.send_input(rid, "go", f'"v{i}"', now=time.time())
        return ids


async def _snapshot(db_url: str) -> tuple[list[Any], dict[str, list[Any]], list[Any]]:
    import durapipe as dp

    async with await dp.Client.connect(db_url) as c:
        runs = await c.store.list_runs(limit=1_000_000)
        events = {r.id: await c.store.events(r.id) for r in runs}
        inputs = [i for r in runs for i in await c.store.inputs_of(r.id)]
        return runs, events, inputs


async def _count_done(db_url: str) -> int:
    import durapipe as dp

    async with await dp.Client.connect(db_url) as c:
        return (await c.store.count_by_status()).get("completed", 0)


def chaos(
    db_url: str, tmp_path: Path, *, runs: int, seconds: float, workers: int = 3
) -> dict[str, Any]:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    ids = asyncio.run(_queue(db_url, runs))
    expected_total = runs + sum(1 for i in range(runs) if i % 4 == 0)
    pool = [_spawn_worker(db_url, tmp_path) for _ in range(workers)]
    kills = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.randrange(len(pool))
            pool[victim].send_signal(signal.SIGKILL)
            pool[victim].wait(timeout=10)
            kills += 1
            pool[victim] = _spawn_worker(db_url, tmp_path)
        wait_until(
            lambda: asyncio.run(_count_done(db_url)) == expected_total,
            timeout=180,
            interval=0.5,
            what="every run to complete",
        )
    finally:
        for p in pool:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
    elapsed = time.monotonic() - t0
    all_runs, events, inputs = asyncio.run(_snapshot(db_url))

    assert len(all_runs) == expected_total and all(r.status == "completed" for r in all_runs)
    reexecuted = 0
    for r in all_runs:
        evs = events[r.id]
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1)), (
            f"{r.id}: seq has a gap or duplicate"
        )
        done = collections.Counter(
            e.step
            for e in evs
            if e.step
            and e.kind
            in (
                "step_completed",
                "timer_fired",
                "input_received",
                "child_completed",
                "value_recorded",
            )
        )
        assert all(n == 1 for n in done.values()), f"{r.id}: a step recorded twice: {done}"
        assert sum(1 for e in evs if e.kind == "run_completed") == 1
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    for key, n in effects.items():
        assert n <= 1 + kills, f"{key} ran {n} times with {kills} kills"
        reexecuted += n - 1
    for i, rid in enumerate(ids):
        out = next(r for r in all_runs if r.id == rid)
        import json

        output = json.loads(out.output)
        if i % 3 == 0:
            assert output["input"] == f"v{i}"
            got = [e for e in events[rid] if e.kind == "input_received"]
            assert len(got) == 1
        if i % 4 == 0:
            assert output["child"] == i * 2
    assert all(inp.consumed_seq is not None for inp in inputs)  # none lost
    assert len({(inp.run_id, inp.consumed_seq) for inp in inputs}) == len(inputs)  # none used twice
    figures = {
        "runs": expected_total,
        "kills": kills,
        "re-executions": reexecuted,
        "seconds": round(elapsed, 1),
    }
    print(f"\nchaos on {db_url.split(':')[0]}: {figures}")
    return figures


def test_chaos_short(db_url: str, tmp_path: Path) -> None:
    figures = chaos(
        db_url,
        tmp_path,
        runs=int(os.environ.get("CHAOS_RUNS", "120")),
        seconds=float(os.environ.get("CHAOS_SECONDS", "8")),
    )
    assert figures["kills"] >= 3


@pytest.mark.slow
def test_chaos_long(db_url: str, tmp_path: Path) -> None:
    chaos(
        db_url,
        tmp_path,
        runs=int(os.environ.get("CHAOS_RUNS", "400")),
        seconds=float(os.environ.get("CHAOS_SECONDS", "120")),
        workers=4,
    )
