"""A run whose lease lapsed while its own process still executed it (heartbeats too late), taken
again by that same process: the stale attempt stops at once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import update

import durapipe as dp
from durapipe._runner import Runner
from durapipe._store import schema as S

pytestmark = pytest.mark.asyncio

GATE: dict[str, asyncio.Event] = {}
SEEN: list[tuple[int, str]] = []  # (the executing task, "start" | "end")


@dp.step
async def held_step() -> str:
    task = id(asyncio.current_task())
    SEEN.append((task, "start"))
    await GATE["open"].wait()
    SEEN.append((task, "end"))
    return "done"


@dp.pipeline(name="lapse_once", version="1")
async def lapse() -> str:
    return await held_step()


async def _until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_run_taken_again_by_its_own_process_stops_the_stale_attempt(store: Any) -> None:
    GATE["open"] = asyncio.Event()
    SEEN.clear()
    rid = await dp.Client(store).start(lapse)
    # A long lease: no heartbeat renews it during the test; its lapse is written below.
    runner = Runner(store, pipelines=[lapse], poll_interval=0.05, lease_ttl=60)
    await runner.start()
    serving = asyncio.ensure_future(runner.serve(runner.claim_filter()))
    try:

        async def started(n: int) -> bool:
            return sum(1 for _, what in SEEN if what == "start") >= n

        await _until(lambda: started(1), "the first attempt's step")

        def lapsed(conn: Any) -> None:
            conn.execute(update(S.runs).where(S.runs.c.id == rid).values(lease_expires_at=0.0))

        await store._write(lapsed)
        runner._wake.set()
        await _until(lambda: started(2), "the run taken again")
        GATE["open"].set()

        async def ended() -> bool:
            return (await store.get_run(rid)).status == "completed"

        await _until(ended, "the run to complete")
    finally:
        runner.stop_claiming()
        await serving
        await runner.shutdown(grace=1)
        await runner.close()
    first, second = SEEN[0][0], SEEN[1][0]
    assert first != second
    # The stale attempt was stopped where it waited: only the new one went on.
    assert [t for t, what in SEEN if what == "end"] == [second]
    assert (await store.get_run(rid)).attempt == 2
