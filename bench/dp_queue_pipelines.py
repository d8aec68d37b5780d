"""Pipelines of bench/queues.py: a trivial run, on a queue with a global limit of 50 or not."""

from __future__ import annotations

import durapipe as dp

# (a checkout without queues, for `bench/queues.py --repo`, loads the pipeline all the same)
q50 = dp.Queue("q50", concurrency=50) if hasattr(dp, "Queue") else None


@dp.step
async def one() -> int:
    return 1


@dp.pipeline
async def trivial() -> int:
    return await one()
