"""durapipe.testing.replay_run: the dry execution of a run stored in a database (issue #15),
on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import replay_run, run_pipeline

pytestmark = pytest.mark.asyncio


@dp.step
async def add(a: int, b: int) -> int:
    return a + b


@dp.step
async def mul(a: int, b: int) -> int:
    return a * b


@dp.pipeline(name="h14_replay_sum", version="1")
async def summed(n: int = 3) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@dp.pipeline(name="h14_replay_sum", version="1")
async def multiplied(n: int = 3) -> int:  # the same pipeline, changed: another step
    total = 0
    for i in range(n):
        total = await mul(total, i)
    return total


async def test_replay_run_checks_a_stored_run_and_touches_nothing(store: Any) -> None:
    view = await run_pipeline(store, summed, n=3)
    assert view.status == "completed"
    before = await dp.Client(store).events(view.run_id)

    result = await replay_run(store, view.run_id, summed)
    assert result.completed and result.output == 3 and result.replayed == 3
    assert result.frontier is None and result.raised is None

    with pytest.raises(dp.NonDeterminismError):
        await replay_run(store, view.run_id, multiplied)
    assert await dp.Client(store).events(view.run_id) == before  # nothing was written
    with pytest.raises(dp.RunNotFound):
        await replay_run(store, "run_nobody", summed)
