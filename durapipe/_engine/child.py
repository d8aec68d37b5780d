"""``dp.run_subpipeline``: a child run, started and waited for as one journaled call."""

from __future__ import annotations

import inspect
from typing import Any, overload

from typing_extensions import ParamSpec, TypeVar

from .. import _serde
from .._definition import PipelineDef, registered
from .._ids import new_id
from .._kinds import EventKind, Family, RunStatus
from ..errors import ConfigError, DurapipeError, SubpipelineFailed
from .context import current
from .journaled import Call, begin

P = ParamSpec("P")
R = TypeVar("R")

MAX_DEPTH = 20


def replay(call: Call) -> Any:
    """A finished child's recorded output, or its recorded failure raised again."""
    data = _serde.loads(call.done.data) or {}
    if call.done.kind == EventKind.CHILD_FAILED:
        raise SubpipelineFailed(data.get("child_run_id", "?"), data.get("error"))
    return data.get("output")


def _by_name(pdef: PipelineDef, args: tuple[Any, ...], inputs: dict[str, Any]) -> dict[str, Any]:
    """Name the positional inputs of a child run after the parameters they fill."""
    names = [
        n
        for n, p in pdef.signature.parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    if len(args) > len(names):
        raise ConfigError(
            f"dp.run_subpipeline: pipeline {pdef.name!r} takes {len(names)} input(s) by position, "
            f"got {len(args)}; pass them by name"
        )
    named = dict(zip(names, args, strict=False))
    twice = next((n for n in named if n in inputs), None)
    if twice is not None:
        raise ConfigError(
            f"dp.run_subpipeline: input {twice!r} of pipeline {pdef.name!r} is given twice"
        )
    return {**named, **inputs}


@overload
async def run_subpipeline(
    pipeline: PipelineDef[P, R], /, *args: P.args, **inputs: P.kwargs
) -> R: ...
@overload
async def run_subpipeline(pipeline: str, /, *args: Any, **inputs: Any) -> Any: ...


async def run_subpipeline(pipeline: PipelineDef | str, /, *args: Any, **inputs: Any) -> Any:
    """Start a child run with these inputs, wait for it to end, and return its output.

    ::

        image = await dp.run_subpipeline(build_image, sha=manifest["sha"])

    The child is a run of its own (``durapipe show`` lists it under its parent) that a worker, or
    the process running the parent, executes; the parent waits without holding a worker when it
    is suspended. Given the pipeline object, the call is typed by it: its inputs are checked
    against the child's parameters and the result has the child's return type. Given a
    pipeline's name (it must be imported in this process), the call is untyped.

    Args:
        pipeline: the child: a ``@dp.pipeline`` or the name of one.
        *args: inputs by position (bound to the child's parameters in order).
        **inputs: inputs by name.

    Returns:
        The child's output (its JSON value).

    Raises:
        SubpipelineFailed: the child failed, was cancelled or aborted.
        ConfigError: ``pipeline`` is not a pipeline, or its inputs do not fit it.
        NotInPipeline: called outside a running pipeline.
    """
    return await start_and_wait(pipeline, args, inputs, None)


async def start_and_wait(
    pipeline: PipelineDef | str,
    args: tuple[Any, ...],
    inputs: dict[str, Any],
    place: dict[str, Any] | None,
) -> Any:
    """``dp.run_subpipeline``; ``place`` puts the child in a queue (``Queue.run_subpipeline``):
    its queue, key, priority and ``queued`` status, the columns of its row."""
    ctx, branch = current("run_subpipeline")
    pdef = registered(pipeline) if isinstance(pipeline, str) else pipeline
    if pdef is None:
        raise ConfigError(
            f"dp.run_subpipeline: no pipeline named {pipeline!r} is loaded in this process; "
            "import the module that defines it, or pass the decorated function itself"
        )
    if not isinstance(pdef, PipelineDef):
        raise ConfigError(
            f"dp.run_subpipeline needs a pipeline (a function decorated with @dp.pipeline or its name), got {pipeline!r}"
        )
    if args:
        inputs = _by_name(pdef, args, inputs)
    pdef.bind_inputs(inputs)
    if ctx.depth + 1 > MAX_DEPTH:
        raise DurapipeError(
            f"sub-pipelines nest deeper than {MAX_DEPTH} levels (run {ctx.run_id}); is {pdef.name} starting itself without end?"
        )
    call = begin(ctx, branch, Family.CHILD, pdef.name, pdef.name)
    if call.done is not None:
        return replay(call)
    key, label = call.key, call.label
    started = call.first(EventKind.CHILD_STARTED)
    if started is not None:
        child_id = (_serde.loads(started.data) or {})["child_run_id"]
    else:
        child_id = new_id("run")
        now = ctx.clock.now()
        text = _serde.dumps(inputs, what=f"the inputs of {pdef.name}")
        child = {
            "id": child_id,
            "pipeline": pdef.name,
            "version": pdef.version,
            "entrypoint": pdef.entrypoint,
            "pinned": pdef.pin,
            "status": RunStatus.PENDING,
            "inputs": text,
            "parent_run_id": ctx.run_id,
            "parent_step": key,
            "root_run_id": ctx.root_run_id,
            "depth": ctx.depth + 1,
            "prefix": f"{ctx.prefix}.{label}",
            "created_at": now,
            "updated_at": now,
            "attempt": 0,
            **(place or {}),
        }
        child_start = {
            "run_id": child_id,
            "seq": 1,
            "kind": EventKind.RUN_STARTED,
            "step": None,
            "name": pdef.name,
            "label": None,
            "at": now,
            "attempt": 0,
            "data": _serde.dumps(
                {"inputs": inputs, "version": pdef.version, "parent_run_id": ctx.run_id}
            ),
        }
        await ctx.write(
            call.event(EventKind.CHILD_STARTED, _serde.dumps({"child_run_id": child_id})),
            child_start,
            new_runs=[child],
            run_update={
                "status": RunStatus.WAITING,
                "updated_at": now,
                "waiting_for": _serde.dumps({"child": child_id}),
            },
        )
        call.emit("info", f"Started child run {child_id} ({pdef.name})")
        ctx.host.child_created(ctx, child_id)
    outcome: list[tuple[str, Any, Any]] = []

    async def ready() -> bool:
        got = await ctx.host.child_outcome(child_id)
        if got is not None:
            outcome.append(got)
            return True
        return False

    await ctx.wait(
        key,
        deadline=None,
        ready=ready,
        status=RunStatus.WAITING,
        waiting_for={"child": child_id},
        wake_if_child=child_id,
    )
    status, output, error = outcome[-1]
    back = ctx.after_wait()
    if status == RunStatus.COMPLETED:
        await call.record(
            EventKind.CHILD_COMPLETED, {"child_run_id": child_id, "output": output}, run_update=back
        )
        call.emit("info", f"Child run {child_id} completed")
        return output
    err = error or {"type": status.capitalize(), "message": f"the child run was {status}"}
    await call.record(
        EventKind.CHILD_FAILED,
        {"child_run_id": child_id, "error": err, "status": status},
        run_update=back,
    )
    call.emit("error", f"Child run {child_id} {status}: {err.get('message', '')}")
    raise SubpipelineFailed(child_id, err)
