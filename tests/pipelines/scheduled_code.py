"""A schedule declared in code (tests/acceptance/test_schedules.py): a worker loading this
module adds it, or updates it when the code changed."""

from __future__ import annotations

import os

import durapipe as dp

# The test changes the interval between two workers through the environment.
EVERY = os.environ.get("SCHEDULED_EVERY", "1s")


@dp.pipeline(schedule=dp.Every(EVERY, overlap="allow", catch_up="none", inputs={"n": 7}))
async def declared(n: int = 0) -> int:
    """Returns its input."""
    return n
