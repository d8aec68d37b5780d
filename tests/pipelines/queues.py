"""Pipelines on queues (tests/acceptance/test_queues.py): each run's one step returns when its
code started and ended, so a test reads from the outputs how many ran at once."""

from __future__ import annotations

import asyncio
import os
import time

import durapipe as dp

pair = dp.Queue("pair", concurrency=2)
envs = dp.Queue("envs", key_concurrency=1)
rated = dp.Queue("rated", rate=(5, 1.0))
ranked = dp.Queue("ranked", concurrency=1, priority=True)


@dp.step
async def work(ms: int) -> list[float]:
    began = time.time()
    await asyncio.sleep(ms / 1000)
    return [began, time.time()]


@dp.pipeline
async def job(ms: int = 20) -> list[float]:
    return await work(ms)


@dp.pipeline
async def fan_out(n: int = 4) -> list[list[float]]:
    """Children on the queue "pair": at most two of them at once."""
    return list(await dp.gather(*(pair.run_subpipeline(job, ms=100) for _ in range(n))))


solo = dp.Queue("solo", concurrency=1)


def _began(line: str) -> None:
    fd = os.open(
        os.path.join(os.environ["SIDE_DIR"], "began"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dp.step
async def slow(name: str, ms: int) -> list[float]:
    began = time.time()
    _began(f"{name} {began}")
    await asyncio.sleep(ms / 1000)
    return [began, time.time()]


@dp.pipeline
async def slow_job(name: str, ms: int = 3000) -> list[float]:
    return await slow(name, ms)
