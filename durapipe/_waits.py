"""Journaled waits on the outside world: an input from a person or program, a child run."""

from __future__ import annotations

import inspect
import time
from typing import Any, overload

from typing_extensions import ParamSpec, TypeVar

from . import _serde
from ._definition import PipelineDef, registered
from ._engine import current
from ._ids import new_id
from .errors import ConfigError, DurapipeError, InputTimeout, SubpipelineFailed

P = ParamSpec("P")
R = TypeVar("R")

MISSING: Any = object()
MAX_DEPTH = 20
MAX_INPUT_NAME = 200


async def await_input(
    name: str, *, prompt: str | None = None, timeout: float | None = None, default: Any = MISSING
) -> Any:
    """Wait until a value for ``name`` is sent (``durapipe input RUN NAME VALUE``) and return it.

    A value sent before the pipeline asks is kept; several values for one name are taken in order
    by successive calls. While it waits the run is ``waiting``; a worker parks it in the database
    after ``--suspend-after`` seconds. Values are sent with ``durapipe input``,
    ``Client.send_input()`` or ``SyncClient.send_input()``.

    Args:
        name: the input's name, 1-200 characters.
        prompt: a question shown to the person who answers (console, ``durapipe show``).
        timeout: seconds to wait (durable: a resumed run waits only what is left); None: forever.
        default: returned on timeout instead of raising.

    Returns:
        The JSON value sent.

    Raises:
        InputTimeout: the timeout passed without a value and no ``default`` was given.
        NotInPipeline: called outside a running pipeline.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_INPUT_NAME:
        raise ValueError("an input name is a non-empty string of at most 200 characters")
    ctx, branch = current("await_input")
    key = branch.next_key()
    label = f"input_{name}"
    ctx.check(key)
    done, evs = ctx.recorded(key, "input", name)
    if done is not None:
        data = _serde.loads(done.data) or {}
        if done.kind == "input_timeout":
            if default is not MISSING:
                return default
            raise InputTimeout(name, float(data.get("timeout") or 0))
        return data.get("value")
    requested = next((e for e in evs if e.kind == "input_requested"), None)
    now = ctx.clock.now()
    if requested is not None:
        deadline = (_serde.loads(requested.data) or {}).get("deadline")
    else:
        deadline = now + timeout if timeout is not None else None
        answer = f"durapipe input {ctx.run_id} {name} VALUE"
        ctx.emit(
            key,
            label,
            "info",
            f"Waiting for input '{name}'"
            + (f" ({prompt})" if prompt else "")
            + f" — answer with: {answer}",
        )
        await ctx.record(
            "input_requested",
            step=key,
            name=name,
            label=label,
            data={"prompt": prompt, "timeout": timeout, "deadline": deadline},
            run_update={
                "status": "waiting",
                "updated_at": now,
                "waiting_for": _serde.dumps(
                    {"input": name, "prompt": prompt, "deadline": deadline}
                ),
            },
        )
    got: list[tuple[int, Any]] = []

    async def ready() -> bool:
        found = await ctx.host.fetch_input(ctx.run_id, name)
        if found is not None:
            got.append(found)
            return True
        return False

    waiting_for = {"input": name, "prompt": prompt, "deadline": deadline}
    ctx.host.input_waiting(ctx, name, prompt, True)
    try:
        arrived = await ctx.wait(
            key,
            deadline=deadline,
            ready=ready,
            status="waiting",
            waiting_for=waiting_for,
            wake_if_input=name,
        )
    finally:
        ctx.host.input_waiting(ctx, name, prompt, False)
    back = ctx.after_wait()
    if not arrived:
        ctx.emit(
            key,
            label,
            "warn",
            f"No value for '{name}' within {timeout:g}s"
            + (": using the default" if default is not MISSING else ""),
        )
        await ctx.record(
            "input_timeout",
            step=key,
            name=name,
            label=label,
            data={"timeout": timeout},
            run_update=back,
        )
        if default is not MISSING:
            return default
        raise InputTimeout(name, float(timeout or 0))
    input_id, value = got[-1]
    ev = ctx.event(
        "input_received",
        step=key,
        name=name,
        label=label,
        # The value was within the limit when it was sent; the wrapper must not push it over.
        data=_serde.dumps(
            {"value": value, "input_id": input_id}, limit=_serde.MAX_VALUE_BYTES + 100
        ),
    )
    await ctx.write(ev, run_update=back, consume_input=input_id, consume_seq=ev["seq"])
    ctx.emit(key, label, "info", f"Received '{name}': {_short(value)}")
    return value


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


def _short(value: Any) -> str:
    text = _serde.dumps(value)
    return text if len(text) < 80 else text[:77] + "..."


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
    key = branch.next_key()
    label = ctx.label(pdef.name)
    ctx.check(key)
    done, evs = ctx.recorded(key, "child", pdef.name)
    if done is not None:
        data = _serde.loads(done.data) or {}
        if done.kind == "child_failed":
            raise SubpipelineFailed(data.get("child_run_id", "?"), data.get("error"))
        return data.get("output")
    started = next((e for e in evs if e.kind == "child_started"), None)
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
            "status": "pending",
            "inputs": text,
            "parent_run_id": ctx.run_id,
            "parent_step": key,
            "root_run_id": ctx.root_run_id,
            "depth": ctx.depth + 1,
            "prefix": f"{ctx.prefix}.{label}",
            "created_at": now,
            "updated_at": now,
            "attempt": 0,
        }
        child_start = {
            "run_id": child_id,
            "seq": 1,
            "kind": "run_started",
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
            ctx.event(
                "child_started",
                step=key,
                name=pdef.name,
                label=label,
                data=_serde.dumps({"child_run_id": child_id}),
            ),
            child_start,
            new_runs=[child],
            run_update={
                "status": "waiting",
                "updated_at": now,
                "waiting_for": _serde.dumps({"child": child_id}),
            },
        )
        ctx.emit(key, label, "info", f"Started child run {child_id} ({pdef.name})")
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
        status="waiting",
        waiting_for={"child": child_id},
        wake_if_child=child_id,
    )
    status, output, error = outcome[-1]
    back = ctx.after_wait()
    if status == "completed":
        await ctx.record(
            "child_completed",
            step=key,
            name=pdef.name,
            label=label,
            data={"child_run_id": child_id, "output": output},
            run_update=back,
        )
        ctx.emit(key, label, "info", f"Child run {child_id} completed")
        return output
    err = error or {"type": status.capitalize(), "message": f"the child run was {status}"}
    await ctx.record(
        "child_failed",
        step=key,
        name=pdef.name,
        label=label,
        data={"child_run_id": child_id, "error": err, "status": status},
        run_update=back,
    )
    ctx.emit(key, label, "error", f"Child run {child_id} {status}: {err.get('message', '')}")
    raise SubpipelineFailed(child_id, err)


def _now() -> float:
    return time.time()
