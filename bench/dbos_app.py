"""DBOS workflows for bench/run.py: the same shapes as dp_pipelines.py."""

from __future__ import annotations

import asyncio
import os
import time

from dbos import DBOS

TIMES: dict[str, float] = {}  # instrumentation of `many` (not journaled)


@DBOS.step()
async def trivial(i: int) -> int:
    return i


@DBOS.step()
async def stamp() -> float:
    return time.time()


@DBOS.step()
async def tick(pause: float) -> float:
    began = time.time()
    await asyncio.sleep(pause)
    return began


@DBOS.workflow()
async def many(n: int) -> int:
    """(a) and (c): n trivial steps. With BENCH_CRASH_AT_END=1 the process dies after them
    (os._exit), leaving the workflow PENDING with n recorded steps."""
    TIMES["entered"] = time.time()
    total = 0
    for i in range(n):
        total += await trivial(i)
    TIMES["looped"] = time.time()
    if os.environ.get("BENCH_CRASH_AT_END") == "1":
        os._exit(0)
    return total


@DBOS.workflow()
async def three() -> int:
    return await trivial(1) + await trivial(2) + await trivial(3)


@DBOS.workflow()
async def sleeper(seconds: float) -> float:
    await DBOS.sleep_async(seconds)
    return await stamp()


@DBOS.workflow()
async def sleeper_until(at: float) -> float:
    await DBOS.sleep_async(max(0.0, at - time.time()))
    return await stamp()


@DBOS.workflow()
async def ticker(n: int, pause: float) -> list[float]:
    return [await tick(pause) for _ in range(n)]


@DBOS.workflow()
async def one_step() -> int:
    """bench/queues.py: one trivial step, as dp_queue_pipelines.trivial."""
    return await trivial(1)
