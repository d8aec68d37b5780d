"""A worker's side tasks are supervised (issue #15), on SQLite and PostgreSQL.

A side task (heartbeats, request delivery, wake-ups, log shipping) that dies is a worker that can
no longer keep its promises: without log shipping its runs' output is lost, without heartbeats
their leases lapse under them. Before, such a task died silently and the worker went on claiming
runs. Now the death is logged and the worker stops claiming, hands back what it holds, and says
why (``durapipe worker`` then exits 1).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import durapipe as dp
from durapipe._runner import Runner
from tests.pipelines import h14_wakeup

pytestmark = pytest.mark.asyncio


class _Broken(Exception):
    pass


async def test_a_side_task_that_dies_stops_the_worker_and_is_logged(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = 0

    def tick() -> None:  # the log shipper calls it every 0.2 s (the console's flush)
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            raise _Broken("the console went away")

    runner = Runner(store, pipelines=[h14_wakeup.wake_ask], poll_interval=0.1, on_tick=tick)
    await runner.start()
    client = dp.Client(store)
    run_id = await client.start(h14_wakeup.wake_ask)
    try:
        with caplog.at_level(logging.ERROR, logger="durapipe.worker"):
            # serve() returns by itself: the worker stopped claiming once its side task died.
            await asyncio.wait_for(runner.serve(runner.claim_filter()), 10)
        assert runner.failure is not None
        name, exc = runner.failure
        assert name == "durapipe-logs" and isinstance(exc, _Broken)
        assert any("durapipe-logs died" in r.getMessage() for r in caplog.records)
        await runner.shutdown(grace=1)
    finally:
        await runner.close()
    view = await client.get(run_id)
    assert view.lease_owner is None, view  # handed back: another worker takes it at once
