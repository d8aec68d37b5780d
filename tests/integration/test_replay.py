"""Replay on both databases: recorded calls never run twice; changed code blocks the run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durapipe as dp
from durapipe._store import schema as S
from durapipe.testing import SkippingClock, resume_run, run_pipeline

pytestmark = pytest.mark.asyncio

CALLS: dict[str, int] = {}
FAIL: set[str] = set()


def bump(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL.clear()


@dp.step
def step_a(x: int) -> int:
    bump("a")
    return x + 1


@dp.step
async def step_b(x: int) -> int:
    bump("b")
    if "b" in FAIL:
        raise RuntimeError("b is told to fail")
    return x * 2


@dp.step
def step_c(x: int) -> int:
    bump("c")
    return x - 1


@dp.pipeline(name="abc", version="1")
async def abc_v1(x: int = 1) -> dict[str, Any]:
    a = await step_a(x)
    b = await step_b(a)
    c = await step_c(b)
    return {"a": a, "b": b, "c": c}


async def test_completes_and_records_every_step(store: Any) -> None:
    view = await run_pipeline(store, abc_v1, x=1)
    assert view.status == "completed"
    assert view.output == {"a": 2, "b": 4, "c": 3}
    kinds = [e.kind for e in await store.events(view.run_id)]
    assert kinds == [
        "run_started",
        *["step_started", "step_completed"] * 3,
        "run_completed",
    ]
    seqs = [e.seq for e in await store.events(view.run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_failed_step_is_stored_and_resume_retries_only_it(store: Any) -> None:
    FAIL.add("b")
    view = await run_pipeline(store, abc_v1, x=1)
    assert view.status == "failed"
    assert view.error is not None and "b is told to fail" in view.error["message"]
    assert view.error["step"] == "2"
    assert CALLS == {"a": 1, "b": 1}
    FAIL.clear()
    view = await resume_run(store, abc_v1, view.run_id)
    assert view.status == "completed", view.error
    assert CALLS == {"a": 1, "b": 2, "c": 1}  # a not re-run, b retried, c run once


@dp.pipeline(name="abc", version="1")
async def abc_changed(x: int = 1) -> dict[str, Any]:
    a = await step_c(x)  # the code now calls c where a was recorded
    b = await step_b(a)
    return {"a": a, "b": b}


async def test_nondeterminism_blocks_then_restored_code_completes(store: Any) -> None:
    FAIL.add("b")
    first = await run_pipeline(store, abc_v1, x=1)
    assert first.status == "failed"
    FAIL.clear()
    blocked = await resume_run(store, abc_changed, first.run_id)
    assert blocked.status == "blocked"
    assert blocked.error is not None
    msg = blocked.error["message"]
    assert first.run_id in msg and "step 1" in msg and "'step_a'" in msg and "'step_c'" in msg
    before = [e.seq for e in await store.events(first.run_id)]
    assert CALLS == {"a": 1, "b": 1}  # nothing ran under the wrong code
    done = await resume_run(store, abc_v1, first.run_id)
    assert done.status == "completed"
    after = [e.seq for e in await store.events(first.run_id)]
    assert after[: len(before)] == before


@dp.pipeline(name="abc", version="1")
async def abc_shorter(x: int = 1) -> int:
    return await step_a(x)


@dp.pipeline(name="abc", version="1")
async def abc_then_fail(x: int = 1) -> int:
    a = await step_a(x)
    await step_c(a)
    await step_c(a)
    raise RuntimeError("the end fails")


async def test_recorded_calls_never_reached_block_the_run(store: Any) -> None:
    first = await run_pipeline(store, abc_then_fail, x=1)
    assert first.status == "failed"
    view = await resume_run(store, abc_shorter, first.run_id)
    assert view.status == "blocked"
    assert "step 2" in (view.error or {}).get("message", "")


@dp.step
def not_json() -> object:
    return object()


@dp.pipeline(version="1")
async def bad_result() -> None:
    await not_json()


async def test_unencodable_result_fails_that_step_with_its_name_and_type(store: Any) -> None:
    view = await run_pipeline(store, bad_result)
    assert view.status == "failed"
    msg = (view.error or {})["message"]
    assert "not_json_1" in msg and "object" in msg


@dp.pipeline(version="1")
async def values() -> dict[str, Any]:
    return {
        "now": await dp.now(),
        "uuid": await dp.uuid4(),
        "r": await dp.random(),
        "ctx": dp.context().run_id,
    }


async def test_nondeterministic_values_are_recorded(store: Any) -> None:
    view = await run_pipeline(store, values)
    assert view.status == "completed"
    recorded = [e for e in await store.events(view.run_id) if e.kind == "value_recorded"]
    assert [e.name for e in recorded] == ["now", "uuid4", "random"]
    assert view.output["ctx"] == view.run_id


@dp.pipeline(version="1")
async def week_long() -> str:
    await dp.sleep(7 * 86400)
    return "a week later"


async def test_durable_sleep_skips_with_the_testing_clock(store: Any) -> None:
    view = await asyncio.wait_for(run_pipeline(store, week_long, clock=SkippingClock()), 10)
    assert view.status == "completed"
    evs = await store.events(view.run_id)
    assert [e.kind for e in evs if e.step] == ["timer_started", "timer_fired"]


@dp.pipeline(version="1")
async def stray_task() -> None:
    await asyncio.create_task(step_a(1))


async def test_journaled_call_from_unknown_task_points_to_gather(store: Any) -> None:
    view = await run_pipeline(store, stray_task)
    assert view.status == "failed"
    assert "dp.gather" in (view.error or {})["message"]


async def test_same_run_id_twice_is_one_run(store: Any) -> None:
    client = dp.Client(store)
    a = await client.start(abc_v1, run_id="order-42", x=1)
    b = await client.start(abc_v1, run_id="order-42", x=1)
    assert a == b == "order-42"
    assert len(await store.list_runs()) == 1
    assert (await store.get_run("order-42")).status == "pending"
    assert "pending" in S.ACTIVE
