"""Pipelines of bench/fanout.py: a parent that fans out to N children and gathers them."""

from __future__ import annotations

import os

import durapipe as dp


@dp.step
async def double(i: int) -> int:
    return 2 * i


@dp.pipeline(name="fan_child", version="1")
async def fan_child(i: int) -> int:
    """One trivial step: the child's cost is the fan-out's, not its work's."""
    return await double(i)


@dp.pipeline(name="fan_parent", version="1")
async def fan_parent(n: int) -> int:
    """What a user writes to run n children in parallel and use all their results: one
    ``dp.gather`` of ``dp.run_subpipeline`` calls. With BENCH_FAIL_AT_END=1 in the environment
    of the process running it, it fails after the gather (so a `resume` replays the fan-out)."""
    results = await dp.gather(*(dp.run_subpipeline(fan_child, i=i) for i in range(n)))
    if os.environ.get("BENCH_FAIL_AT_END") == "1":
        raise RuntimeError("stop here so the parent can be resumed")
    return sum(results)


@dp.pipeline(name="fan_parent_handles", version="1")
async def fan_parent_handles(n: int) -> int:
    """The other way to write it: start every child (handles), then await them in order."""
    handles = [await dp.start_subpipeline(fan_child, i=i) for i in range(n)]
    total = 0
    for h in handles:
        total += await h.result()
    if os.environ.get("BENCH_FAIL_AT_END") == "1":
        raise RuntimeError("stop here so the parent can be resumed")
    return total
