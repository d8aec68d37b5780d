"""The journaled-call mechanism on its own (durapipe/_engine/journaled.py), with no database.

A toy primitive is defined here the way the engine's own are (``current`` -> ``begin`` -> replay
the completion or run and record it). Histories are built by hand; what the toy writes goes to
an in-memory journal that only keeps the ops it is given.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from durapipe._clock import SYSTEM_CLOCK
from durapipe._engine import (
    _BRANCH,
    _CTX,
    Branch,
    ReplayFrontier,
    RunContext,
    begin,
    current,
    step_of,
)
from durapipe._kinds import EventKind, Family
from durapipe._store.store import Op
from durapipe.errors import NonDeterminismError, StepFailed

pytestmark = pytest.mark.asyncio


async def toy(name: str, make: Callable[[], Any]) -> Any:
    """A primitive of the step family: runs ``make`` once; replay returns or raises its record."""
    ctx, branch = current("toy")
    call = begin(ctx, branch, Family.STEP, name, name)
    if call.done is not None:
        data = json.loads(call.done.data)
        if call.done.kind == EventKind.STEP_FAILED:
            raise call.failure(StepFailed(call.label or name, "Boom", data["error"]))
        return data["result"]
    try:
        value = make()
    except Exception as exc:
        await call.record(EventKind.STEP_FAILED, {"error": str(exc)})
        raise call.failure(StepFailed(call.label or name, "Boom", str(exc))) from exc
    await call.record(EventKind.STEP_COMPLETED, {"result": value})
    return value


class _Journal:
    def __init__(self) -> None:
        self.ops: list[Op] = []

    async def submit(self, op: Op) -> None:
        self.ops.append(op)

    async def flush_logs(self) -> None:
        return None


class _Host:
    def __init__(self) -> None:
        self.clock = SYSTEM_CLOCK
        self.journal = _Journal()
        self.suspend_after = 60.0
        self.poll_interval = 0.05
        self.lines: list[str] = []

    def emit(self, rec: Any) -> None:
        self.lines.append(rec.line)


def _ev(seq: int, kind: str, step: str | None, name: str | None, data: Any = None) -> Any:
    return SimpleNamespace(
        run_id="run_t",
        seq=seq,
        kind=kind,
        step=step,
        name=name,
        label=f"{name}_1" if name else None,
        at=0.0,
        attempt=1,
        data=None if data is None else json.dumps(data),
    )


_ROW = SimpleNamespace(
    id="run_t",
    pipeline="p",
    version="1",
    root_run_id="run_t",
    parent_run_id=None,
    depth=0,
    prefix="p",
    attempt=1,
)


async def _run(
    history: list[Any], body: Callable[[], Awaitable[Any]], *, dry: bool = False
) -> tuple[RunContext, _Host, Any]:
    host = _Host()
    ctx = RunContext(host=host, row=_ROW, history=history, owner="w", dry=dry)  # type: ignore[arg-type]
    root = Branch("", None)
    cv = contextvars.copy_context()
    cv.run(_CTX.set, ctx)
    cv.run(_BRANCH.set, root)
    task = asyncio.get_running_loop().create_task(body(), context=cv)
    root.task = ctx.task = task
    return ctx, host, await task


def _live() -> Callable[[], Any]:
    raise AssertionError("a recorded call ran again")


async def test_a_recorded_call_replays_without_running_and_writes_nothing() -> None:
    history = [
        _ev(1, "run_started", None, "p"),
        _ev(2, "step_completed", "1", "a", {"result": 41}),
        _ev(3, "step_completed", "2", "b", {"result": 1}),
    ]

    async def body() -> Any:
        return await toy("a", _live) + await toy("b", _live)

    ctx, host, out = await _run(history, body)
    assert out == 42
    assert host.journal.ops == []
    assert ctx.visited == {"1", "2"} and ctx._at_frontier()


async def test_past_the_history_a_call_runs_and_journals_its_completion_at_the_next_key() -> None:
    history = [_ev(1, "run_started", None, "p"), _ev(2, "step_completed", "1", "a", {"result": 1})]
    ran: list[str] = []

    async def body() -> Any:
        first = await toy("a", _live)
        return first + await toy("b", lambda: ran.append("b") or 2)

    _ctx, host, out = await _run(history, body)
    assert out == 3 and ran == ["b"]
    [op] = host.journal.ops
    [ev] = op.events
    assert (ev["seq"], ev["kind"], ev["step"], ev["name"], ev["label"]) == (
        3,
        "step_completed",
        "2",
        "b",
        "b_1",
    )
    assert json.loads(ev["data"]) == {"result": 2}


@pytest.mark.parametrize(
    ("kind", "name", "seen"),
    [
        ("step_completed", "other", "step 'other'"),  # same kind of call, another name
        ("timer_fired", "a", "timer 'a'"),  # another kind of call, the same name
    ],
)
async def test_another_call_at_a_recorded_key_is_nondeterminism(
    kind: str, name: str, seen: str
) -> None:
    history = [_ev(1, "run_started", None, "p"), _ev(2, kind, "1", name, {"result": 1})]

    async def body() -> Any:
        return await toy("a", _live)

    with pytest.raises(NonDeterminismError) as info:
        await _run(history, body)
    err = info.value
    assert (err.step, err.recorded, err.now) == ("1", seen, "step 'a'")


async def test_a_recorded_failure_is_raised_again_tagged_with_its_step() -> None:
    history = [
        _ev(1, "run_started", None, "p"),
        _ev(2, "step_completed", "1", "a", {"result": 1}),
        _ev(3, "step_failed", "2", "b", {"error": "no disk"}),
    ]
    caught: list[BaseException] = []

    async def body() -> Any:
        await toy("a", _live)
        try:
            await toy("b", _live)
        except StepFailed as exc:
            caught.append(exc)
        return "handled"

    _ctx, host, out = await _run(history, body)
    assert out == "handled" and host.journal.ops == []
    [exc] = caught
    assert "no disk" in str(exc) and step_of(exc) == "2"


async def test_a_live_failure_is_journaled_then_raised_tagged_with_its_step() -> None:
    def boom() -> Any:
        raise OSError("no disk")

    async def body() -> Any:
        await toy("a", boom)

    with pytest.raises(StepFailed) as info:
        await _run([_ev(1, "run_started", None, "p")], body)
    assert step_of(info.value) == "1"


async def test_a_dry_replay_stops_at_the_first_call_with_no_completion() -> None:
    history = [
        _ev(1, "run_started", None, "p"),
        _ev(2, "step_completed", "1", "a", {"result": 1}),
        _ev(3, "step_started", "2", "b"),
    ]

    async def body() -> Any:
        await toy("a", _live)
        await toy("b", _live)

    with pytest.raises(ReplayFrontier) as info:
        await _run(history, body, dry=True)
    assert info.value.args[0] == "2"
