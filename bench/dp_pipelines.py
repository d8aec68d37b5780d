"""durapipe pipelines for bench/run.py (loaded by the bench and by `durapipe worker -m`)."""

from __future__ import annotations

import asyncio
import os
import time

import durapipe as dp

TIMES: dict[str, float] = {}  # instrumentation of `many` (not journaled)


@dp.step
async def trivial(i: int) -> int:
    return i


@dp.step
async def stamp() -> float:
    """The wall time at which this step began executing."""
    return time.time()


@dp.step
async def tick(pause: float) -> float:
    began = time.time()
    await asyncio.sleep(pause)
    return began


@dp.pipeline(name="bench_many", version="1")
async def many(n: int) -> int:
    """(a) and (c): n trivial steps. With BENCH_FAIL_AT_END=1 it fails after them (to be resumed)."""
    TIMES["entered"] = time.time()
    total = 0
    for i in range(n):
        total += await trivial(i)
    TIMES["looped"] = time.time()
    if os.environ.get("BENCH_FAIL_AT_END") == "1":
        raise RuntimeError("failing at the end so the run can be resumed")
    return total


@dp.pipeline(name="bench_three", version="1")
async def three() -> int:
    """(b): 3 trivial steps."""
    return await trivial(1) + await trivial(2) + await trivial(3)


@dp.pipeline(name="bench_sleeper", version="1")
async def sleeper(seconds: float) -> float:
    """(d): a durable sleep, then a step that records when it began."""
    await dp.sleep(seconds)
    return await stamp()


@dp.pipeline(name="bench_sleep_until", version="1")
async def sleeper_until(at: float) -> float:
    """bench/wake.py: a durable sleep until the wall time ``at``, then a step that records when
    it began. (The duration is read from the clock once: a replay takes the recorded wake time.)"""
    await dp.sleep(max(0.0, at - time.time()))
    return await stamp()


@dp.pipeline(name="bench_ticker", version="1")
async def ticker(n: int, pause: float) -> list[float]:
    """(e): n steps of `pause` seconds each; the output is every step's start time."""
    return [await tick(pause) for _ in range(n)]
