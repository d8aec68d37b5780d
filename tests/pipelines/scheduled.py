"""Pipelines for the schedule tests (tests/*/test_schedules*.py)."""

from __future__ import annotations

import asyncio

import durapipe as dp


@dp.pipeline
async def tick(n: int = 0) -> dict[str, object]:
    """Says which schedule and tick started it."""
    info = dp.context()
    return {"schedule": info.schedule, "scheduled_at": info.scheduled_at, "n": n}


@dp.pipeline
async def slow(seconds: float = 2.5) -> str:
    """A run longer than its schedule's interval (overlap tests)."""
    await asyncio.sleep(seconds)
    return "done"
