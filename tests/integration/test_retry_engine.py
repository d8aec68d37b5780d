"""Durable retries, step timeouts and run timeouts in the engine, on both databases, with the
testing kit's skipping clock: delays are recorded instants, never re-drawn, never cut short."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import SkippingClock, run_pipeline

pytestmark = pytest.mark.asyncio

TRIES: list[int] = []
FINALLY: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    TRIES.clear()
    FINALLY.clear()


@dp.step(retries=3, retry_delay=3600, backoff=2, max_delay=5000)
async def fails_twice() -> int:
    TRIES.append(dp.context().attempt)
    if len(TRIES) < 3:
        raise RuntimeError(f"try {len(TRIES)} fails")
    return dp.context().attempt


@dp.pipeline(name="retry_engine_hourly", version="1")
async def hourly() -> int:
    return await fails_twice()


@dp.step(timeout=0.2)
async def hangs() -> None:
    await asyncio.sleep(30)


@dp.pipeline(name="retry_engine_hangs", version="1")
async def catches_timeout() -> str:
    try:
        await hangs()
    except dp.StepTimeout as exc:
        return f"{type(exc).__name__} {exc.step} {exc.timeout:g}"
    return "no timeout"


@dp.step
async def note(tag: str) -> str:
    FINALLY.append(tag)
    return tag


@dp.pipeline(name="retry_engine_deadline", version="1", timeout=60)
async def sleeps_past_its_deadline() -> None:
    try:
        await dp.sleep(3600)
        await note("after the sleep")
    finally:
        await note("finally")


def _data(e: Any) -> dict[str, Any]:
    return json.loads(e.data) if e.data else {}


async def test_retry_delays_are_recorded_instants_that_the_next_try_waits_for(store: Any) -> None:
    view = await run_pipeline(store, hourly, clock=SkippingClock())
    assert view.status == "completed" and view.output == 3
    assert TRIES == [1, 2, 3]  # dp.context().attempt: the try, 1-based
    evs = await store.events(view.run_id)
    retries = [e for e in evs if e.kind == "step_retry"]
    starts = [e for e in evs if e.kind == "step_started"]
    assert [_data(r)["try"] for r in retries] == [1, 2]
    for n, r in enumerate(retries, start=1):
        d = _data(r)
        exp = min(3600 * 2 ** (n - 1), 5000)
        assert exp / 2 <= d["delay"] <= exp  # jittered within [half, all]
        assert d["retry_at"] == pytest.approx(r.at + d["delay"], abs=0.01)
        nxt = next(s for s in starts if s.seq > r.seq)
        assert nxt.at >= d["retry_at"]  # the next try never starts before its instant
    assert len({_data(r)["delay"] for r in retries}) == 2


async def test_an_async_step_is_cancelled_at_its_timeout(store: Any) -> None:
    view = await run_pipeline(store, catches_timeout)
    assert view.output == "StepTimeout hangs_1 0.2"
    failed = [e for e in await store.events(view.run_id) if e.kind == "step_failed"]
    assert _data(failed[0])["timeout"] == 0.2
    assert _data(failed[0])["error"]["type"] == "StepTimeout"


async def test_a_run_past_its_deadline_is_cancelled_and_ends_timed_out(store: Any) -> None:
    view = await run_pipeline(store, sleeps_past_its_deadline, clock=SkippingClock())
    assert view.status == "timed_out"
    assert FINALLY == ["finally"]  # the call after the sleep was never made; finally ran once
    row = await store.get_run(view.run_id)
    evs = await store.events(view.run_id)
    assert evs[-1].kind == "run_timed_out" and evs[-1].at >= row.deadline_at
    assert row.deadline_at == pytest.approx(row.created_at + 60, abs=0.01)
    assert json.loads(row.error)["type"] == "RunTimeout"


@pytest.mark.parametrize("bad", [-1, 0, float("nan"), float("inf"), "2h"])
async def test_client_start_refuses_a_bad_timeout_and_creates_nothing(store: Any, bad: Any) -> None:
    client = dp.Client(store)
    with pytest.raises(dp.ConfigError, match="timeout must be"):
        await client.start(hourly, timeout=bad)
    assert await client.list() == []
