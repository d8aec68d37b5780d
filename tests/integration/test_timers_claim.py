"""Timers taken on time (issue #21): the store's side, on SQLite and PostgreSQL.

A worker reads the timers due soon (``Store.upcoming_timers``) and claims each by id just before
it is due (``Store.claim_timers``). The claim checks what ``Store.claim`` checks — still
suspended, nobody's lease, not held, this worker's pipelines — so a run another worker took, or
one held meanwhile, is not taken; a run taken early stays ``sleeping`` (it sleeps the rest in the
worker's memory).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import durapipe as dp
from durapipe._runner import Runner
from durapipe._store.claims import ClaimFilter

pytestmark = pytest.mark.asyncio


@dp.pipeline(name="timers_snooze", version="1")
async def snooze(seconds: float) -> str:
    await dp.sleep(seconds)
    return "awake"


FLT = ClaimFilter(pipelines={"timers_snooze": "1"})


async def _asleep(store: Any, *seconds: float) -> list[str]:
    """Runs of ``snooze`` suspended on their timers (a worker took them to their sleep)."""
    client = dp.Client(store)
    ids = [await client.start(snooze, seconds=s) for s in seconds]
    runner = Runner(store, pipelines=[snooze], poll_interval=0.05, suspend_after=0.5)
    await runner.start()
    serving = asyncio.ensure_future(runner.serve(runner.claim_filter()))
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = await store.get_runs(ids)
            if all(r.status == "sleeping" and r.lease_owner is None for r in rows):
                break
            assert time.monotonic() < deadline, [(r.status, r.lease_owner) for r in rows]
            await asyncio.sleep(0.05)
    finally:
        runner.stop_claiming()
        await serving
        await runner.shutdown(grace=1)
        await runner.close()
    return ids


async def test_upcoming_timers_are_the_window_earliest_first(store: Any) -> None:
    a, b, c = await _asleep(store, 30, 300, 60)
    now = time.time()
    got = await store.upcoming_timers(flt=FLT, until=now + 120, limit=10)
    assert [rid for rid, _ in got] == [a, c]  # b is due after the window
    assert got[0][1] < got[1][1]
    assert await store.upcoming_timers(flt=FLT, until=now + 120, limit=1) == got[:1]
    other = ClaimFilter(pipelines={"another": "1"})
    assert await store.upcoming_timers(flt=other, until=now + 120, limit=10) == []
    await store.hold("timers_snooze", None, now=now)  # `durapipe stop --pipeline`: not taken
    assert await store.upcoming_timers(flt=FLT, until=now + 120, limit=10) == []


async def test_a_timer_taken_early_stays_sleeping_leased_once(store: Any) -> None:
    a, b = await _asleep(store, 30, 300)
    before = {r.id: r for r in await store.get_runs([a, b])}
    now = time.time()
    got = await store.claim_timers(
        [a, b], owner="wkr_one", flt=FLT, ttl=30, now=now, due_by=now + 60
    )
    assert [r.id for r in got.rows] == [a]  # b is not due by then
    assert [e.kind for e in got.histories[a]][-1] == "timer_started"  # read with the claim
    row = (await store.get_runs([a]))[0]
    assert row.status == "sleeping" and row.lease_owner == "wkr_one"
    assert row.attempt == before[a].attempt + 1 and row.recoveries == before[a].recoveries
    # Another worker that read the same timers takes nothing: the lease is someone's.
    again = await store.claim_timers(
        [a, b], owner="wkr_two", flt=FLT, ttl=30, now=now, due_by=now + 600
    )
    assert [r.id for r in again.rows] == [b]
    assert (await store.get_runs([a]))[0].lease_owner == "wkr_one"


async def test_a_due_timer_is_taken_running_and_a_held_one_not(store: Any) -> None:
    a, b = await _asleep(store, 30, 30)
    later = time.time() + 40  # both due by then: taken as the claim loop would, running
    got = await store.claim_timers([a], owner="wkr_one", flt=FLT, ttl=30, now=later, due_by=later)
    assert [(r.id, r.status) for r in got.rows] == [(a, "running")]
    await store.hold("timers_snooze", None, now=later)
    held = await store.claim_timers([b], owner="wkr_one", flt=FLT, ttl=30, now=later, due_by=later)
    assert held.rows == []
    assert (await store.get_runs([b]))[0].lease_owner is None
