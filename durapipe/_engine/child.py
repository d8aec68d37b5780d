"""Child runs: ``dp.run_subpipeline`` (start and wait, one journaled call) and
``dp.start_subpipeline`` (start, get a :class:`ChildHandle` to wait for or cancel it later).

Both start a child the same way (:func:`_launch`: the child's row, its first event and the
parent's event in one write, so a crash leaves both or neither) and wait for it the same way
(:func:`_wait_for`).
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, Literal, overload

from typing_extensions import ParamSpec, TypeVar

from .. import _serde, _typed
from .._definition import PipelineDef, registered
from .._ids import new_id, validate_run_id
from .._kinds import EventKind, Family, RunStatus
from ..errors import ConfigError, DurapipeError, InvalidInput, SubpipelineFailed
from .context import current
from .first import ChildWait, register
from .journaled import Call, begin
from .run import RunContext, earliest

P = ParamSpec("P")
R = TypeVar("R")

MAX_DEPTH = 20


def replay(call: Call, typed: Any = None) -> Any:
    """A finished child's recorded output (decoded by ``typed``, the child's result adapter),
    or its recorded failure raised again."""
    data = _serde.loads(call.done.data) or {}
    if call.done.kind == EventKind.CHILD_FAILED:
        raise SubpipelineFailed(data.get("child_run_id", "?"), data.get("error"))
    return _typed.decode(typed, data.get("output"), what=f"the output of child {call.name}")


def _adapter(pipeline: str) -> Any:
    """The result adapter of a child pipeline loaded here (None: its output stays JSON)."""
    pdef = registered(pipeline)
    return _typed.result_adapter(pdef.fn) if isinstance(pdef, PipelineDef) else None


def _by_name(
    pdef: PipelineDef, args: tuple[Any, ...], inputs: dict[str, Any], what: str
) -> dict[str, Any]:
    """Name the positional inputs of a child run after the parameters they fill."""
    names = [
        n
        for n, p in pdef.signature.parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    if len(args) > len(names):
        raise ConfigError(
            f"dp.{what}: pipeline {pdef.name!r} takes {len(names)} input(s) by position, "
            f"got {len(args)}; pass them by name"
        )
    named = dict(zip(names, args, strict=False))
    twice = next((n for n in named if n in inputs), None)
    if twice is not None:
        raise ConfigError(f"dp.{what}: input {twice!r} of pipeline {pdef.name!r} is given twice")
    return {**named, **inputs}


def _child_def(pipeline: PipelineDef | str, what: str) -> PipelineDef:
    pdef = registered(pipeline) if isinstance(pipeline, str) else pipeline
    if pdef is None:
        raise ConfigError(
            f"dp.{what}: no pipeline named {pipeline!r} is loaded in this process; "
            "import the module that defines it, or pass the decorated function itself"
        )
    if not isinstance(pdef, PipelineDef):
        raise ConfigError(
            f"dp.{what} needs a pipeline (a function decorated with @dp.pipeline or its name), got {pipeline!r}"
        )
    return pdef


def _checked_inputs(
    pdef: PipelineDef, args: tuple[Any, ...], inputs: dict[str, Any], what: str
) -> dict[str, Any]:
    if args:
        inputs = _by_name(pdef, args, inputs, what)
    try:
        return pdef.bind_inputs(inputs)
    except InvalidInput as exc:
        raise InvalidInput(f"dp.{what}: {exc}") from None


def _check_depth(ctx: RunContext, pdef: PipelineDef) -> None:
    if ctx.depth + 1 > MAX_DEPTH:
        raise DurapipeError(
            f"sub-pipelines nest deeper than {MAX_DEPTH} levels (run {ctx.run_id}); is {pdef.name} starting itself without end?"
        )


async def _launch(
    ctx: RunContext,
    call: Call,
    pdef: PipelineDef,
    inputs: dict[str, Any],
    *,
    kind: EventKind,
    run_id: str | None = None,
    detached: bool = False,
    waiting: bool = False,
    place: dict[str, Any] | None = None,
) -> str:
    """Create the child run: its row, its ``run_started`` and the parent's ``kind`` event
    (naming the child) in one write. -> the child's id."""
    child_id = run_id or new_id("run")
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
        "parent_step": call.key,
        # A detached child is the root of a tree of its own: nothing of its parent's ends it.
        "root_run_id": child_id if detached else ctx.root_run_id,
        "depth": ctx.depth + 1,
        "prefix": pdef.name if detached else f"{ctx.prefix}.{call.label}",
        "created_at": now,
        "updated_at": now,
        "attempt": 0,
        # A child ends by its parent's deadline at the latest (it times out with it), unless it
        # is detached: then only its own timeout counts.
        "deadline_at": earliest(
            now + pdef.timeout if pdef.timeout is not None else None,
            None if detached else ctx.deadline_at,
        ),
    }
    if detached:
        child["detached"] = True
    if place:  # in a queue (Queue.run_subpipeline): its queue, key, priority, queued status
        child.update(place)
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
            {
                "inputs": inputs,
                "version": pdef.version,
                "parent_run_id": ctx.run_id,
                # Tracing: the child's spans go under this call's (see durapipe.tracing).
                **({"trace": ctx.obs.carrier(ctx, call.key)} if ctx.obs is not None else {}),
            }
        ),
    }
    data: dict[str, Any] = {"child_run_id": child_id}
    if detached:
        data["detached"] = True
    kw: dict[str, Any] = {}
    if waiting:  # run_subpipeline: the parent waits for it from now on
        kw["run_update"] = {
            "status": RunStatus.WAITING,
            "updated_at": now,
            "waiting_for": _serde.dumps({"child": child_id}),
        }
    await ctx.write(call.event(kind, _serde.dumps(data)), child_start, new_runs=[child], **kw)
    call.emit(
        "info", f"Started child run {child_id} ({pdef.name})" + (" detached" if detached else "")
    )
    ctx.host.child_created(ctx, child_id)
    return child_id


async def _wait_for(ctx: RunContext, call: Call, child_id: str, typed: Any = None) -> Any:
    """Wait for the child to end and record its outcome at ``call``: its output, or raise."""
    outcome: list[tuple[str, Any, Any]] = []

    async def ready() -> bool:
        got = await ctx.host.child_outcome(child_id)
        if got is not None:
            outcome.append(got)
            return True
        return False

    await ctx.wait(
        call.key,
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
        # Decoded as replay decodes it: the same value live and replayed.
        return _typed.decode(typed, output, what=f"the output of child {call.name}")
    err = error or {"type": status.capitalize(), "message": f"the child run was {status}"}
    await call.record(
        EventKind.CHILD_FAILED,
        {"child_run_id": child_id, "error": err, "status": status},
        run_update=back,
    )
    call.emit("error", f"Child run {child_id} {status}: {err.get('message', '')}")
    raise SubpipelineFailed(child_id, err)


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
    pipeline's name (it must be imported in this process), the call is untyped. It is
    ``(await dp.start_subpipeline(...)).result()`` as one journaled call.

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
    pdef = _child_def(pipeline, "run_subpipeline")
    inputs = _checked_inputs(pdef, args, inputs, "run_subpipeline")
    _check_depth(ctx, pdef)
    call = begin(ctx, branch, Family.CHILD, pdef.name, pdef.name)
    typed = _typed.result_adapter(pdef.fn)
    if call.done is not None:
        return replay(call, typed)
    started = call.first(EventKind.CHILD_STARTED)
    if started is not None:
        child_id = (_serde.loads(started.data) or {})["child_run_id"]
    else:
        child_id = await _launch(
            ctx, call, pdef, inputs, kind=EventKind.CHILD_STARTED, waiting=True, place=place
        )
    return await _wait_for(ctx, call, child_id, typed)


class ChildHandle(Generic[R]):
    """A child run started by :func:`start_subpipeline`: wait for it, or cancel it.

    ::

        h = await dp.start_subpipeline(build, sha=sha)
        ...                                 # the child runs meanwhile
        image = await h.result()            # typed as build's return type

    Attributes:
        run_id: the child's run id.
        pipeline: the child's pipeline name.
        detached: the child outlives this run (it was started with ``detached=True``).
    """

    __slots__ = ("run_id", "pipeline", "detached")

    def __init__(self, run_id: str, pipeline: str, *, detached: bool = False) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.detached = detached

    def __repr__(self) -> str:
        return f"ChildHandle({self.run_id!r}, pipeline={self.pipeline!r})"

    async def result(self) -> R:
        """Wait for the child to end and return its output (a journaled call of the run that
        awaits it: replay returns the recorded outcome).

        Raises:
            SubpipelineFailed: the child failed, was cancelled or aborted.
            NotInPipeline: called outside a running pipeline.
        """
        ctx, branch = current("ChildHandle.result")
        call = begin(ctx, branch, Family.CHILD, self.pipeline, self.pipeline)
        typed = _adapter(self.pipeline)
        if call.done is not None:
            return replay(call, typed)  # type: ignore[no-any-return]
        return await _wait_for(ctx, call, self.run_id, typed)  # type: ignore[no-any-return]

    async def cancel(self) -> None:
        """Ask the child to cancel (its ``finally`` blocks run); journaled, so it is asked once.

        It does not wait: ``await h.result()`` then raises ``SubpipelineFailed`` (cancelled),
        unless the child had already ended.
        """
        ctx, branch = current("ChildHandle.cancel")
        call = begin(ctx, branch, Family.CHILD, self.pipeline, None)
        if call.done is not None:
            return
        # Asked before it is recorded: a crash in between asks again (asking twice is harmless).
        await ctx.host.cancel_child(self.run_id)
        await call.record(EventKind.CHILD_CANCEL_REQUESTED, {"child_run_id": self.run_id})
        call.emit("info", f"Asked child run {self.run_id} to cancel")


@overload
async def start_subpipeline(
    pipeline: PipelineDef[P, R], /, *args: P.args, **inputs: P.kwargs
) -> ChildHandle[R]: ...
@overload
async def start_subpipeline(
    pipeline: PipelineDef[..., R],
    /,
    *args: Any,
    run_id: str,
    detached: bool = False,
    **inputs: Any,
) -> ChildHandle[R]: ...
@overload
async def start_subpipeline(
    pipeline: PipelineDef[..., R],
    /,
    *args: Any,
    detached: Literal[True],
    run_id: str | None = None,
    **inputs: Any,
) -> ChildHandle[R]: ...
@overload
async def start_subpipeline(
    pipeline: str,
    /,
    *args: Any,
    run_id: str | None = None,
    detached: bool = False,
    **inputs: Any,
) -> ChildHandle[Any]: ...


async def start_subpipeline(  # type: ignore[misc]  # run_id/detached are the call's own
    pipeline: PipelineDef | str,
    /,
    *args: Any,
    run_id: str | None = None,
    detached: bool = False,
    **inputs: Any,
) -> ChildHandle[Any]:
    """Start a child run without waiting for it; return a :class:`ChildHandle`.

    ::

        handles = [await dp.start_subpipeline(build, sha=s) for s in shas]
        images = [await h.result() for h in handles]
        audit = await dp.start_subpipeline(audit_trail, run_id=f"audit-{day}", detached=True)

    The child is started exactly once, even if this run crashes right after (the child's row and
    this call's event are one write; replay hands back the same child). Unless it is
    ``detached``, a child this run has not waited for is cancelled when this run ends
    (completed, failed, cancelled or continued as new); a detached child is a run tree of its
    own and outlives it (workers execute it). Typed by the pipeline object: the handle's
    ``result()`` has the child's return type; the inputs are checked against the child's
    parameters when no ``run_id``/``detached`` is given.

    Args:
        pipeline: the child: a ``@dp.pipeline`` or the name of one.
        *args: inputs by position.
        run_id: the child's id (default: a new one); it must not be used by another run.
        detached: let the child outlive this run.
        **inputs: inputs by name.

    Raises:
        InvalidInput: inputs the child does not accept, or a ``run_id`` that is unusable or
            taken by another run (nothing is started).
        ConfigError: ``pipeline`` is not a pipeline.
        NotInPipeline: called outside a running pipeline.
    """
    ctx, branch = current("start_subpipeline")
    pdef = _child_def(pipeline, "start_subpipeline")
    inputs = _checked_inputs(pdef, args, inputs, "start_subpipeline")
    if run_id is not None:
        why = validate_run_id(run_id) if isinstance(run_id, str) else "it is not a string"
        if why:
            raise InvalidInput(f"dp.start_subpipeline: run id {run_id!r} is not usable: {why}")
    _check_depth(ctx, pdef)
    call = begin(ctx, branch, Family.CHILD, pdef.name, pdef.name)
    if call.done is not None:
        data = _serde.loads(call.done.data) or {}
        return ChildHandle(data["child_run_id"], pdef.name, detached=bool(data.get("detached")))
    if run_id is not None and await ctx.host.find_run(run_id) is not None:
        raise call.failure(
            InvalidInput(
                f"dp.start_subpipeline: run id {run_id!r} is already used by another run; "
                "give the child an id of its own"
            )
        )
    ctx.spawned = True
    child_id = await _launch(
        ctx, call, pdef, inputs, kind=EventKind.CHILD_SPAWNED, run_id=run_id, detached=detached
    )
    return ChildHandle(child_id, pdef.name, detached=detached)


# dp.first races a handle's result(): dp.first(h.result(), dp.sleep(60)).
register(ChildHandle.result, lambda a: ChildWait(a["self"].run_id))
