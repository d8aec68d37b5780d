"""One execution: an attempt of a run against its history, and how it ended.

:func:`execute` is the only place a pipeline's code is started (its context, its root branch,
its task), the only place how it ended is judged (completed, failed, nondeterministic...), and
the only place that ending is written. Everything that runs pipeline code calls it: the worker
and ``durapipe run``/``resume``/``cancel`` (a live context: the ending is written to the run),
``durapipe upgrade check`` and the testing kit's replay (a dry context: nothing is written, and
the first call the history has no result for ends the attempt as :attr:`Outcome.FRONTIER`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from . import _serde, _typed
from ._clock import SYSTEM_CLOCK
from ._definition import PipelineDef
from ._engine import (
    _BRANCH,
    _CTX,
    HOST,
    Branch,
    LogRecord,
    ReplayFrontier,
    RunContext,
    error_data,
    step_of,
)
from ._engine.continue_as_new import ContinueAsNew
from ._ids import new_id
from ._kinds import RELEASING, TERMINAL, EventKind, Request, RunStatus
from ._records import continued_run, end_update, run_event
from ._spans import fmt_span
from .errors import (
    DurapipeError,
    LeaseLost,
    NonDeterminismError,
    RunStopping,
    RunSuspending,
    VersionMismatch,
)

# What NonDeterminismError.now says when the code returned before making a recorded call.
RETURNED_EARLY = "nothing: the pipeline returned before reaching it"


class Outcome(StrEnum):
    """How an attempt ended. The first seven are the run's status after it."""

    COMPLETED = RunStatus.COMPLETED.value
    FAILED = RunStatus.FAILED.value
    BLOCKED = RunStatus.BLOCKED.value  # its code no longer makes the recorded calls
    STOPPED = RunStatus.STOPPED.value
    CANCELLED = RunStatus.CANCELLED.value
    ABORTED = RunStatus.ABORTED.value  # pinned to another version
    CONTINUED = RunStatus.CONTINUED.value  # dp.continue_as_new: ended, its successor started
    TIMED_OUT = RunStatus.TIMED_OUT.value  # cancelled at its run timeout
    SUSPENDED = "suspended"  # parked on a long wait (sleeping/waiting); its lease given up
    RELEASED = "released"  # handed back untouched (shutdown, hold)
    LOST = "lost"  # this process may write nothing more (lease lost, a write failed)
    FRONTIER = "frontier"  # (dry) reached the first call the history has no result for


@dataclass(frozen=True, kw_only=True)
class Result:
    """What :func:`execute` found."""

    outcome: Outcome
    output: Any = None  # COMPLETED: what the pipeline returned
    # FAILED: what it raised; BLOCKED: the NonDeterminismError; ABORTED: the VersionMismatch
    error: BaseException | None = None
    frontier: str | None = None  # FRONTIER: the step key where the run would continue live
    replayed: int = 0  # recorded calls the code made again
    recorded: int = 0  # recorded calls in the history
    missed: NonDeterminismError | None = None  # FAILED: a recorded call it raised before making


class Settler(Protocol):
    """What a live execution needs from its process to write how it ended."""

    id: str

    async def release(self, ctx: RunContext) -> None: ...
    async def cancel_children(self, run_id: str) -> None: ...


class DryHost:
    """The host of a dry replay: no journal, no inputs, no children; it stops before any."""

    clock = SYSTEM_CLOCK
    journal: Any = None
    suspend_after = math.inf
    poll_interval = 1.0

    def emit(self, rec: LogRecord) -> None:
        pass

    def child_created(self, ctx: RunContext, child_id: str) -> None:
        raise AssertionError("dry replay must not start children")

    def input_waiting(self, ctx: RunContext, name: str, prompt: str | None, waiting: bool) -> None:
        pass

    async def fetch_input(self, run_id: str, name: str) -> tuple[int, Any] | None:
        return None

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        return None

    async def fetch_message(
        self, run_id: str, topic: str, skip: set[int]
    ) -> tuple[int, Any, float] | None:
        return None

    async def run_status(self, run_id: str) -> str | None:
        return None

    async def find_run(self, run_id: str) -> Any | None:
        raise AssertionError("dry replay must not start children")

    async def cancel_child(self, child_id: str) -> None:
        raise AssertionError("dry replay must not cancel children")


async def execute(
    ctx: RunContext,
    pdef: PipelineDef,
    row: Any,
    *,
    settler: Settler | None = None,
    resumed: str | None = None,
) -> Result:
    """Execute one attempt of ``row`` with ``pdef``'s code against the history in ``ctx``.

    A live context (``settler`` given) writes the ending to the run — its final event and row —
    and, when it was resumed from ``resumed`` (its status before), a ``run_resumed`` event
    first. A dry context writes nothing. -> the :class:`Result`; with a live context its outcome
    is what was written (LOST when the ending could not be).
    """
    obs = ctx.obs if settler is not None else None
    if obs is None:
        return await _execute(ctx, pdef, row, settler, resumed)
    obs.run_begin(ctx)
    outcome = "error"  # an exception escaped (the worker logs it)
    try:
        result = await _execute(ctx, pdef, row, settler, resumed)
        outcome = result.outcome
        return result
    finally:
        obs.run_end(ctx, outcome)


async def _execute(
    ctx: RunContext, pdef: PipelineDef, row: Any, settler: Settler | None, resumed: str | None
) -> Result:
    if row.pinned and row.version != pdef.version:
        err = VersionMismatch(row.pipeline, row.version, pdef.version)
        result = Result(outcome=Outcome.ABORTED, error=err)
        return result if settler is None else await _settle(ctx, row, result, settler)
    if settler is not None and resumed is not None:
        ctx.emit(
            None, None, "info", f"Resuming run {row.id} (was {resumed}, execution {row.attempt})"
        )
        where = {"from": resumed, "worker": settler.id, "host": HOST, "pid": os.getpid()}
        await ctx.write(ctx.event(EventKind.RUN_RESUMED, data=_serde.dumps(where)))
    result = await _attempt(ctx, pdef, row)
    if result.outcome is Outcome.CONTINUED and settler is not None:
        return await _continue(ctx, pdef, row, result, settler)
    return result if settler is None else await _settle(ctx, row, result, settler)


def start_task(ctx: RunContext, pdef: PipelineDef, inputs: dict[str, Any]) -> asyncio.Task[Any]:
    """Start the pipeline's code as the task of ``ctx``, in a context of its own."""
    root = Branch("", None)
    cv = contextvars.copy_context()
    cv.run(_CTX.set, ctx)
    cv.run(_BRANCH.set, root)
    task = asyncio.get_running_loop().create_task(pdef.fn(**inputs), context=cv)
    root.task = task
    ctx.task = task
    return task


async def _attempt(ctx: RunContext, pdef: PipelineDef, row: Any) -> Result:
    """Run the code and judge how it ended; write nothing."""
    result = await _run_code(ctx, pdef, row)
    if ctx.continued is not None and result.outcome is not Outcome.LOST:
        # dp.continue_as_new: whatever its unwinding raised after it (finally blocks).
        return Result(outcome=Outcome.CONTINUED, output=ctx.continued.inputs)
    return result


async def _run_code(ctx: RunContext, pdef: PipelineDef, row: Any) -> Result:
    recorded = len(ctx.records)
    try:  # each input as the type its parameter annotates (live and on replay alike)
        inputs = _typed.decode_inputs(pdef.fn, _serde.loads(row.inputs) or {}, pipeline=pdef.name)
    except DurapipeError as exc:
        return Result(outcome=Outcome.FAILED, error=exc, recorded=recorded)
    task = start_task(ctx, pdef, inputs)
    timer = None
    if ctx.deadline_at is not None and not ctx.dry:
        # The run's deadline while it executes here (a suspended run is woken at it instead).
        left = max(0.0, ctx.deadline_at - ctx.clock.now())
        timer = asyncio.get_running_loop().call_later(left, ctx.time_out)
    try:
        return await _judge(ctx, task, row, recorded)
    finally:
        if timer is not None:
            timer.cancel()


async def _judge(ctx: RunContext, task: asyncio.Task[Any], row: Any, recorded: int) -> Result:
    try:
        output = await task
    except ContinueAsNew:
        return Result(outcome=Outcome.CONTINUED)
    except RunSuspending:
        return Result(outcome=Outcome.SUSPENDED)
    except ReplayFrontier as stop:
        if ctx.fatal is not None:
            return Result(outcome=Outcome.BLOCKED, error=ctx.fatal, recorded=recorded)
        key = str(stop.args[0])
        return Result(
            outcome=Outcome.FRONTIER,
            frontier=key,
            replayed=len(ctx.visited - {key}),
            recorded=recorded,
        )
    except RunStopping as exc:
        if ctx.request in RELEASING or str(exc) in RELEASING:
            return Result(outcome=Outcome.RELEASED)
        return Result(outcome=Outcome.STOPPED)
    except LeaseLost:
        return Result(outcome=Outcome.LOST)
    except asyncio.CancelledError:
        if ctx.request == Request.LOST:
            return Result(outcome=Outcome.LOST)
        if ctx.request == Request.SUSPENDED:  # cancelled while its suspension was written
            return Result(outcome=Outcome.SUSPENDED)
        if ctx.cancel_delivered:
            # A cancel that comes after the deadline (a parent's, ending its children when it
            # timed out) is the timeout too.
            if ctx.timed_out or ctx.past_deadline():
                return Result(outcome=Outcome.TIMED_OUT)
            return Result(outcome=Outcome.CANCELLED)
        if ctx.request in RELEASING:
            return Result(outcome=Outcome.RELEASED)
        if ctx.request in (Request.STOP, Request.STOP_NOW):
            return Result(outcome=Outcome.STOPPED)
        raise
    except NonDeterminismError as exc:
        return Result(outcome=Outcome.BLOCKED, error=exc, recorded=recorded)
    except Exception as exc:
        if ctx.fatal is not None:
            return Result(outcome=Outcome.BLOCKED, error=ctx.fatal, recorded=recorded)
        return Result(
            outcome=Outcome.FAILED,
            error=exc,
            replayed=len(ctx.visited),
            recorded=recorded,
            missed=missed_call(ctx, row.id),
        )
    if ctx.fatal is not None:
        return Result(outcome=Outcome.BLOCKED, error=ctx.fatal, recorded=recorded)
    missed = missed_call(ctx, row.id)
    if missed is not None:
        return Result(outcome=Outcome.BLOCKED, error=missed, recorded=recorded)
    return Result(
        outcome=Outcome.COMPLETED, output=output, replayed=len(ctx.visited), recorded=recorded
    )


def missed_call(ctx: RunContext, run_id: str) -> NonDeterminismError | None:
    """The first recorded call the code did not make (it returned or raised before it)."""
    left = ctx.unvisited()
    if not left:
        return None
    first = ctx.records[left[0]][0]
    return NonDeterminismError(
        run_id, left[0], f"{first.kind.split('_')[0]} {first.name!r}", RETURNED_EARLY
    )


async def _settle(ctx: RunContext, row: Any, result: Result, settler: Settler) -> Result:
    """Write how a live attempt ended. -> the result, LOST if that could not be written."""
    out = result.outcome
    if out in (Outcome.SUSPENDED, Outcome.LOST):
        return result  # the suspension was written by the wait; a lost run writes nothing
    if out is Outcome.RELEASED:
        await settler.release(ctx)
        return result
    if out is Outcome.ABORTED:
        assert result.error is not None
        ctx.emit(None, None, "error", f"aborted: {result.error}")
        return await _end(ctx, row, result, settler, error=error_data(result.error))
    if out is Outcome.STOPPED:
        # The one resume hint a stop prints: in the run's log, so `durapipe logs` has it too.
        ctx.emit(None, None, "warn", "Stopped; continue with: durapipe resume " + row.id)
        return await _end(ctx, row, result, settler)
    if out is Outcome.CANCELLED:
        ctx.emit(None, None, "warn", "Cancelled")
        cancelled = {"type": "Cancelled", "message": "the run was cancelled"}
        return await _end(ctx, row, result, settler, error=cancelled)
    if out is Outcome.TIMED_OUT:
        deadline = ctx.deadline_at or ctx.clock.now()
        started = row.created_at if row.created_at is not None else deadline
        message = f"the run passed its timeout ({fmt_span(max(0.0, deadline - started))} after it started)"
        ctx.emit(None, None, "error", f"Timed out: {message}")
        timed_out = {"type": "RunTimeout", "message": message}
        return await _end(ctx, row, result, settler, error=timed_out)
    if out is Outcome.BLOCKED:
        exc = result.error
        assert isinstance(exc, NonDeterminismError)
        ctx.emit(None, None, "error", f"blocked: {exc}")
        return await _end(ctx, row, result, settler, error=error_data(exc, step=exc.step))
    if out is Outcome.FAILED:
        assert result.error is not None
        failure = error_data(result.error, step=_origin_step(result.error))
        ctx.emit(None, None, "error", f"failed: {failure['type']}: {failure['message']}")
        return await _end(ctx, row, result, settler, error=failure)
    assert out is Outcome.COMPLETED
    try:
        text = _serde.dumps(
            result.output,
            what=f"the output of pipeline {row.pipeline} ({type(result.output).__name__})",
        )
    except DurapipeError as exc:
        ctx.emit(None, None, "error", f"failed: {exc}")
        failed = Result(outcome=Outcome.FAILED, error=exc)
        return await _end(ctx, row, failed, settler, error=error_data(exc))
    return await _end(ctx, row, result, settler, output=text)


_END_EVENTS = {
    Outcome.COMPLETED: EventKind.RUN_COMPLETED,
    Outcome.FAILED: EventKind.RUN_FAILED,
    Outcome.BLOCKED: EventKind.RUN_BLOCKED,
    Outcome.STOPPED: EventKind.RUN_STOPPED,
    Outcome.CANCELLED: EventKind.RUN_CANCELLED,
    Outcome.ABORTED: EventKind.RUN_ABORTED,
    Outcome.TIMED_OUT: EventKind.RUN_TIMED_OUT,
}


async def _end(
    ctx: RunContext,
    row: Any,
    result: Result,
    settler: Settler,
    *,
    output: str | None = None,
    error: dict[str, Any] | None = None,
) -> Result:
    """Append the run's end event and give up its lease, in one write."""
    status = RunStatus(result.outcome.value)
    kind = _END_EVENTS[result.outcome]
    now = ctx.clock.now()
    data = output if kind == EventKind.RUN_COMPLETED else (_serde.dumps(error) if error else None)
    # A run that ends without an error (completed, or stopped after a resume) keeps none:
    # the error of an earlier failed attempt is history (in its events), not its state.
    update = end_update(status, now=now, error=error)
    update.update(wake_at=None, waiting_for=None, requested=None)
    if output is not None:
        update["output"] = _serde.mask_json(output)
    try:
        await ctx.write(
            ctx.event(kind, data=data),
            run_update=update,
            wake_parent=row.parent_run_id if status in TERMINAL else None,
        )
    except LeaseLost:
        return Result(outcome=Outcome.LOST)
    ctx.status = status
    if status in TERMINAL and (status != RunStatus.COMPLETED or ctx.spawned):
        # Children it started and did not wait for end with it (detached ones go on); only
        # dp.start_subpipeline can leave one unfinished when the run completes.
        await settler.cancel_children(row.id)
    return result


async def _continue(
    ctx: RunContext, pdef: PipelineDef, row: Any, result: Result, settler: Settler
) -> Result:
    """End the run ``continued`` and create its successor, in one write (dp.continue_as_new)."""
    stop = ctx.continued
    now = ctx.clock.now()
    successor = new_id("run")
    chain = getattr(row, "chain_id", None) or row.id
    inputs = stop.inputs
    text = _serde.dumps(inputs, what=f"the inputs of {row.pipeline}")
    nxt = continued_run(
        row,
        run_id=successor,
        version=pdef.version,
        entrypoint=pdef.entrypoint,
        inputs=text,
        now=now,
    )
    started = run_event(
        successor,
        1,
        EventKind.RUN_STARTED,
        at=now,
        attempt=0,
        name=row.pipeline,
        data=_serde.dumps(
            {"inputs": inputs, "version": pdef.version, "continued_from": row.id, "host": HOST}
        ),
    )
    update = end_update(RunStatus.CONTINUED, now=now, error=None)
    update.update(wake_at=None, waiting_for=None, requested=None, chain_id=chain)
    ended = ctx.event(
        EventKind.RUN_CONTINUED,
        step=stop.key,
        name="continue_as_new",
        data=_serde.dumps({"successor": successor, "inputs": inputs}),
    )
    try:
        await ctx.write(ended, started, run_update=update, new_runs=[nxt], copy_tags_to=successor)
    except LeaseLost:
        return Result(outcome=Outcome.LOST)
    ctx.emit(None, None, "info", f"Continued as new run {successor}")
    ctx.status = RunStatus.CONTINUED
    await settler.cancel_children(row.id)
    return Result(outcome=Outcome.CONTINUED, output=successor)


def _origin_step(exc: BaseException) -> str | None:
    """The step key a failure came from, through its causes (set by the step that raised it)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 20:
        key = step_of(cur)
        if key:
            return str(key)
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


async def replay(row: Any, history: list[Any], pdef: PipelineDef, *, owner: str) -> Result:
    """A dry execution of ``row`` against ``history``: nothing is run, nothing written."""
    ctx = RunContext(host=DryHost(), row=row, history=history, owner=owner, dry=True)
    return await execute(ctx, pdef, row)
