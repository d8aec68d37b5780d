"""dp.first, dp.send/recv and dp.set_event through the testing kit: killed at every history
write and resumed, always the same winners and each message taken once (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any

import pytest

import durapipe as dp
from durapipe._engine.first import ChildWait, raceable
from durapipe.testing import (
    SkippingClock,
    crash_run,
    record_commits,
    replay_run,
    resume_run,
    run_pipeline,
)

if not any(ep.value == "durapipe.testing" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["durapipe.testing"]


@pytest.fixture(params=["sqlite", "postgresql"])
def kit_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        if server is None:
            pytest.skip("no PostgreSQL server available")
        monkeypatch.setenv("DURAPIPE_TEST_DATABASE_URL", server)
    else:
        monkeypatch.delenv("DURAPIPE_TEST_DATABASE_URL", raising=False)
    return str(request.param)


both = pytest.mark.usefixtures("kit_database")

EXPECTED = [[1, "b1"], [1, "tb"], "a1", [1, None], {"n": 2}]


@dp.pipeline(version="1")
async def racer() -> list[Any]:
    me = dp.context().run_id
    await dp.send(me, "b", "b1")
    # Two topics and a timer: the queued message wins, and only it is taken.
    r1 = await dp.first(dp.recv("a"), dp.recv("b"), dp.sleep(30))
    # Nothing comes: the recv's own timeout (5 s) is the earliest deadline.
    r2 = await dp.first(dp.recv("a"), dp.recv("b", timeout=5, default="tb"), dp.sleep(10))
    await dp.send(me, "a", "a1")
    late = await dp.recv("a")  # no loser took it
    r3 = await dp.first(dp.recv("a"), dp.sleep(1))
    await dp.set_event("progress", {"n": 1})
    await dp.set_event("progress", {"n": 2})  # the latest value wins
    return [[r1.index, r1.value], [r2.index, r2.value], late, [r3.index, r3.value], {"n": 2}]


async def _check_sound(store: Any, run_id: str) -> None:
    rows = await store.messages_of(run_id)
    # Sent exactly once, taken exactly once, whatever was killed where.
    assert [(r.topic, json.loads(r.value)) for r in rows] == [("b", "b1"), ("a", "a1")]
    assert all(r.consumed_seq is not None for r in rows)
    events = await store.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    by_seq = {e.seq: e for e in events}
    for r in rows:
        assert by_seq[r.consumed_seq].kind in ("recv_received", "first_done")
    assert [e.kind for e in events].count("first_done") == 3
    published = await store.published(run_id)
    assert [(p.key, json.loads(p.value)) for p in published] == [("progress", {"n": 2})]


@both
@pytest.mark.asyncio
async def test_first_killed_at_every_write_and_resumed_keeps_its_winners(
    durapipe_store: Any,
) -> None:
    view, commits = await record_commits(durapipe_store, racer, clock=SkippingClock())
    assert view.status == "completed" and view.output == EXPECTED
    await _check_sound(durapipe_store, view.run_id)
    assert (await replay_run(durapipe_store, view.run_id, racer)).output == EXPECTED
    # Killed right after each write (before=k is after=k-1 for this pipeline: nothing is
    # posted without being waited for); before the completion of a first: the next test.
    for k in range(1, len(commits) + 1):
        for where in ("after",):
            crashed = await crash_run(durapipe_store, racer, clock=SkippingClock(), **{where: k})
            done = crashed
            if crashed.status != "completed":  # after the last write: it had just ended
                done = await resume_run(
                    durapipe_store, racer, crashed.run_id, clock=SkippingClock()
                )
            assert done.status == "completed", (where, k, done.error)
            assert done.output == EXPECTED, (where, k)
            await _check_sound(durapipe_store, crashed.run_id)


@both
@pytest.mark.asyncio
async def test_first_crashed_before_its_completion_takes_the_same_message(
    durapipe_store: Any,
) -> None:
    crashed = await crash_run(durapipe_store, racer, clock=SkippingClock(), before="first_done")
    rows = await durapipe_store.messages_of(crashed.run_id)
    assert [r.consumed_seq for r in rows] == [None]  # not taken: the take rides with first_done
    done = await resume_run(durapipe_store, racer, crashed.run_id, clock=SkippingClock())
    assert done.output == EXPECTED


@dp.pipeline(version="1")
async def empty_first() -> None:
    await dp.first()  # type: ignore[call-overload]


@dp.pipeline(version="1")
async def bad_waits() -> None:
    await dp.first(dp.recv("a"), dp.now())  # type: ignore[arg-type]


@dp.pipeline(version="1")
async def bad_topic() -> None:
    await dp.send(dp.context().run_id, "no spaces", 1)


@dp.pipeline(version="1")
async def to_nobody() -> str:
    try:
        await dp.send("run_nobody_here", "x", 1)
    except dp.RunNotFound as exc:
        return f"refused: {exc.run_id}"
    return "sent"


@both
@pytest.mark.asyncio
async def test_bad_calls_fail_clearly_and_record_nothing(durapipe_store: Any) -> None:
    for pipe, needle in (
        (empty_first, "dp.first needs at least one wait"),
        (bad_waits, "argument 2 is not a wait it can race"),
        (bad_topic, "is not a short identifier"),
    ):
        view = await run_pipeline(durapipe_store, pipe)
        assert view.status == "failed" and needle in view.error["message"], view.error
        kinds = [e.kind for e in await durapipe_store.events(view.run_id)]
        assert kinds == ["run_started", "run_failed"]
    # A send to no run is refused, recorded (a replay refuses it again) and catchable.
    view = await run_pipeline(durapipe_store, to_nobody)
    assert view.output == "refused: run_nobody_here"
    assert (await replay_run(durapipe_store, view.run_id, to_nobody)).output == view.output
    assert await durapipe_store.messages_of("run_nobody_here") == []


@dp.pipeline(version="1")
async def two_takers() -> list[Any]:
    me = dp.context().run_id
    await dp.send(me, "t", "m1")
    await dp.send(me, "t", "m2")
    a, b = await dp.gather(dp.recv("t"), dp.recv("t"))
    return sorted([a, b])


@both
@pytest.mark.asyncio
async def test_two_branches_receiving_one_topic_take_different_messages(
    durapipe_store: Any,
) -> None:
    view = await run_pipeline(durapipe_store, two_takers)
    assert view.status == "completed" and view.output == ["m1", "m2"], view.error
    rows = await durapipe_store.messages_of(view.run_id)
    assert len({r.consumed_seq for r in rows}) == 2 and None not in {r.consumed_seq for r in rows}


@dp.pipeline(version="1")
async def finishes(fail: bool = False) -> str:
    if fail:
        raise RuntimeError("boom")
    return "made"


@raceable(lambda a: ChildWait(a["run_id"]))
async def finished(run_id: str) -> Any:
    """A stand-in for a child handle's result(): the ChildWait protocol, raced."""
    raise AssertionError("only raced, never awaited")


@dp.pipeline(version="1")
async def watcher(other: str) -> list[Any]:
    try:
        got = await dp.first(finished(other), dp.sleep(30))
    except dp.SubpipelineFailed as exc:
        return ["failed", exc.child_run_id]
    return [got.index, got.value]


@both
@pytest.mark.asyncio
async def test_a_run_finishing_is_raced_through_the_child_wait_protocol(
    durapipe_store: Any,
) -> None:
    ok = await run_pipeline(durapipe_store, finishes)
    bad = await run_pipeline(durapipe_store, finishes, fail=True)
    clock = SkippingClock()
    view = await run_pipeline(durapipe_store, watcher, clock=clock, other=ok.run_id)
    assert view.output == [0, "made"]
    view = await run_pipeline(durapipe_store, watcher, clock=clock, other=bad.run_id)
    assert view.output == ["failed", bad.run_id]
    assert (await replay_run(durapipe_store, view.run_id, watcher)).output == view.output


@dp.pipeline(version="1")
async def slow_kid(seconds: float) -> str:
    await dp.sleep(seconds)
    return f"slept {seconds}"


@dp.pipeline(version="1")
async def handle_racer(seconds: float, deadline: float) -> list[Any]:
    h = await dp.start_subpipeline(slow_kid, seconds=seconds)
    got = await dp.first(h.result(), dp.sleep(deadline))
    if got.index == 1:  # the deadline won: the child is cancelled with its handle
        await h.cancel()
    return [got.index, got.value]


@both
@pytest.mark.asyncio
async def test_a_child_handles_result_is_raced_by_first(durapipe_store: Any) -> None:
    # Real time, wide margins: the child's 0.1 s sleep against a 30 s deadline, and its hour
    # against 0.5 s.
    won = await run_pipeline(durapipe_store, handle_racer, seconds=0.1, deadline=30)
    assert won.output == [0, "slept 0.1"]
    lost = await run_pipeline(durapipe_store, handle_racer, seconds=3600, deadline=0.5)
    assert lost.output == [1, None]
    kids = await durapipe_store.children(lost.run_id)
    assert [k.status for k in kids] == ["cancelled"]
    for view in (won, lost):
        replayed = await replay_run(durapipe_store, view.run_id, handle_racer)
        assert replayed.output == view.output


@dp.pipeline(version="1")
async def relay(n: int = 0) -> Any:
    if n == 0:
        await dp.continue_as_new(n=1)
    return await dp.recv("go", timeout=60)


@both
@pytest.mark.asyncio
async def test_a_message_to_a_chain_reaches_its_live_link(durapipe_store: Any) -> None:
    import asyncio

    client = dp.Client(durapipe_store)
    task = asyncio.create_task(run_pipeline(durapipe_store, relay, run_id="relay-1"))
    for _ in range(600):  # the second link waits in dp.recv
        waiting = await client.list(status="waiting")
        if waiting:
            break
        await asyncio.sleep(0.05)
    assert waiting and waiting[0].run_id != "relay-1"
    await client.send("relay-1", "go", 5)  # the first id: the live link takes it
    await asyncio.wait_for(task, 60)
    assert await client.result("relay-1") == 5
    # A chain's ended link never holds a message.
    assert list(await durapipe_store.messages_of("relay-1")) == []
    with pytest.raises(dp.InvalidRunState):
        await client.send(waiting[0].run_id, "go", 6)  # the live link has completed
