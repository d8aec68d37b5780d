"""``dp.first``: the first of several journaled waits to complete, as one journaled call.

``dp.first(dp.recv("paid"), dp.sleep(3600))`` takes ONE step key. The waits passed to it are
never started: each is an unstarted coroutine of a primitive that registered itself here with
:func:`raceable`, and :func:`first` turns it into a :class:`Raceable` — a description of what it
waits for — and closes the coroutine. ``first`` then waits for all of them at once, and records
which one completed (its index) and its value in one completion event: on replay it returns
that record, so the same wait wins whatever arrives later.

Taking the winner's value (a message, an input) is written in the same transaction as that
completion (``Taken.consume``: ``consume_message``/``consume_input`` of the ``Op``), so a loser
takes nothing: a message not taken stays queued for the next ``recv``.

The protocol a wait implements (for a new primitive, e.g. a child handle's ``result()``)::

    @raceable(lambda args: ChildWait(args["self"].run_id))   # args: the coroutine's arguments
    async def result(self) -> R: ...

    class ChildWait:                      # a Raceable
        what = "child run_..."            # identifies the wait (part of first's recorded name)
        seconds = None                    # a deadline, relative to when first starts, or None
        wake = ("child", run_id)          # what wakes a suspended run: input | message | child
        async def poll(self, ctx): ...    # -> Taken(value, record, consume) once it completed
        def at_deadline(self): ...        # value (or raise) when its deadline came first
        def restore(self, record): ...    # value (or raise) from Taken.record, on replay

A suspended ``first`` is woken by whichever arrives: its deadline is the run's ``wake_at`` and
its ``wake`` pairs are checked under the run's row lock when it suspends (``Op.wake_if``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from .. import _serde
from .._kinds import EventKind, Family, RunStatus
from .context import current
from .journaled import Call, begin

if TYPE_CHECKING:
    from .run import RunContext

T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class Taken:
    """A wait that completed: its value, what to record of it, and what taking it writes."""

    value: Any
    record: Any  # JSON: stored in first's completion; Raceable.restore turns it back into value
    at: float | None = None  # when it arrived (a message's or input's time), if known
    consume: dict[str, Any] = field(default_factory=dict)  # Op fields: consume_message=id...


class Raceable(Protocol):
    """What :func:`first` needs of a wait it races (see the module's docstring)."""

    what: str
    seconds: float | None
    wake: tuple[str, str] | None

    async def poll(self, ctx: RunContext) -> Taken | None: ...
    def at_deadline(self) -> Any: ...
    def restore(self, record: Any) -> Any: ...


_BUILDERS: dict[Any, Callable[[dict[str, Any]], Raceable]] = {}


def raceable(build: Callable[[dict[str, Any]], Raceable]) -> Callable[[F], F]:
    """Register an ``async def`` primitive as a wait :func:`first` can race: ``build`` gets the
    arguments of an unstarted call (by parameter name) and returns its :class:`Raceable`."""

    def deco(fn: F) -> F:
        _BUILDERS[fn.__code__] = build
        return fn

    return deco


def register(fn: Callable[..., Any], build: Callable[[dict[str, Any]], Raceable]) -> None:
    """:func:`raceable` for a function defined elsewhere."""
    _BUILDERS[fn.__code__] = build


@dataclass(frozen=True)
class FirstResult(Generic[T]):
    """What :func:`first` returns: which wait completed first, and its value.

    Attributes:
        index: the position of the winning wait among ``first``'s arguments (0-based).
        value: its value (a message's or input's value; None for a sleep).
    """

    index: int
    value: T


def _arms(aws: tuple[Awaitable[Any], ...]) -> list[Raceable]:
    arms: list[Raceable] = []
    for i, aw in enumerate(aws):
        code = getattr(aw, "cr_code", None)
        build = _BUILDERS.get(code) if code is not None else None
        if build is None:
            raise TypeError(
                f"dp.first: argument {i + 1} is not a wait it can race; pass unstarted calls of "
                "dp.recv(...), dp.await_input(...), dp.sleep(...) (not awaited, not tasks)"
            )
        if inspect.getcoroutinestate(aw) != inspect.CORO_CREATED:  # type: ignore[arg-type]
            raise TypeError(f"dp.first: argument {i + 1} was already started; pass it unawaited")
        arms.append(build(dict(inspect.getcoroutinelocals(aw))))  # type: ignore[arg-type]
    return arms


@overload
async def first(a: Awaitable[T1], /) -> FirstResult[T1]: ...
@overload
async def first(a: Awaitable[T1], b: Awaitable[T2], /) -> FirstResult[T1 | T2]: ...
@overload
async def first(
    a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], /
) -> FirstResult[T1 | T2 | T3]: ...
@overload
async def first(
    a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], d: Awaitable[T4], /
) -> FirstResult[T1 | T2 | T3 | T4]: ...
@overload
async def first(*waits: Awaitable[Any]) -> FirstResult[Any]: ...


async def first(*waits: Awaitable[Any]) -> FirstResult[Any]:
    """Wait for the first of several waits to complete; the others are dropped (``dp.first``).

    ::

        got = await dp.first(dp.recv("paid"), dp.recv("cancelled"), dp.sleep(3600))
        if got.index == 0:
            receipt = got.value

    The waits are calls of ``dp.recv``, ``dp.await_input`` and ``dp.sleep``, passed unawaited:
    ``first`` does not start them, it waits for all of them as one journaled call. A message or
    input is taken only by the wait that wins (the others stay queued); a sleep is a deadline.
    Which one won is recorded, so a replay returns the same winner and value. When several are
    ready at once the one that arrived first wins (then the lower index); a deadline wins over
    what arrived after it. A ``dp.recv``/``dp.await_input`` given a ``timeout`` wins at its
    deadline with its ``default`` (or raises its timeout error).

    Args:
        *waits: at least one unstarted wait.

    Returns:
        A :class:`FirstResult`: ``.index`` (which argument won, 0-based) and ``.value``.

    Raises:
        TypeError: no waits, or an argument that is not an unstarted wait.
        NotInPipeline: called outside a running pipeline.
    """
    try:
        if not waits:
            raise TypeError(
                "dp.first needs at least one wait, e.g. dp.first(dp.recv('paid'), dp.sleep(60))"
            )
        arms = _arms(waits)
        ctx, branch = current("first")
    finally:
        for aw in waits:  # never started: close them (no "never awaited" warnings)
            if asyncio.iscoroutine(aw):
                aw.close()
    name = " | ".join(a.what for a in arms)
    if len(name) > 200:
        name = name[:197] + "..."
    call = begin(ctx, branch, Family.FIRST, name, "first")
    if call.done is not None:
        data = _serde.loads(call.done.data) or {}
        index = int(data["index"])
        if data.get("deadline"):
            return FirstResult(index, _value(call, arms[index].at_deadline))
        return FirstResult(index, _value(call, arms[index].restore, data.get("record")))
    started = call.first(EventKind.FIRST_STARTED)
    now = ctx.clock.now()
    if started is not None:
        deadlines = list((_serde.loads(started.data) or {}).get("deadlines") or [])
    else:
        deadlines = [None if a.seconds is None else now + a.seconds for a in arms]
    timed = [d for d in deadlines if d is not None]
    deadline = min(timed) if timed else None
    only_timers = all(a.wake is None for a in arms)
    status = RunStatus.SLEEPING if only_timers else RunStatus.WAITING
    waiting_for = {"first": [a.what for a in arms], "deadline": deadline}
    if started is None:
        call.emit("info", f"Waiting for the first of: {', '.join(a.what for a in arms)}")
        await call.record(
            EventKind.FIRST_STARTED,
            {"waits": [a.what for a in arms], "deadlines": deadlines},
            run_update={
                "status": status,
                "updated_at": now,
                "wake_at": deadline if only_timers else None,
                "waiting_for": _serde.dumps(waiting_for),
            },
        )
    won: list[tuple[int, Taken]] = []

    async def ready() -> bool:
        found: list[tuple[float, int, Taken]] = []
        for i, arm in enumerate(arms):
            if arm.wake is None:
                continue
            got = await arm.poll(ctx)
            if got is not None:
                found.append((got.at if got.at is not None else 0.0, i, got))
        if not found:
            return False
        at, i, got = min(found, key=lambda f: (f[0], f[1]))
        if deadline is not None and deadline < at:
            return False  # the deadline came first: it wins (ctx.wait sees it is due)
        mid = got.consume.get("consume_message")
        if mid is not None:
            if mid in ctx.taking:  # another branch took it while the other waits were looked at
                return False
            from .messages import mark_taking

            mark_taking(ctx, mid)  # no other branch of this run takes it meanwhile
        won.append((i, got))
        return True

    arrived = await ctx.wait(
        call.key,
        deadline=deadline,
        ready=None if only_timers else ready,
        status=status,
        waiting_for=waiting_for,
        wake_if=[a.wake for a in arms if a.wake is not None],
    )
    back = ctx.after_wait()
    if arrived:
        index, taken = won[-1]
        ev = call.event(
            EventKind.FIRST_DONE,
            _serde.dumps(
                {"index": index, "what": arms[index].what, "record": taken.record},
                limit=_serde.MAX_VALUE_BYTES + 1000,
            ),
        )
        consume = dict(taken.consume)
        if consume:
            consume["consume_seq"] = ev["seq"]
        await ctx.write(ev, run_update=back, **consume)
        # As on replay: from the record (a failed child raises here, live and replayed alike).
        return FirstResult(index, _value(call, arms[index].restore, taken.record))
    index = next(i for i, d in enumerate(deadlines) if d == deadline)
    await call.record(
        EventKind.FIRST_DONE,
        {"index": index, "what": arms[index].what, "record": None, "deadline": True},
        run_update=back,
    )
    return FirstResult(index, _value(call, arms[index].at_deadline))


def _value(call: Call, fn: Callable[..., Any], *args: Any) -> Any:
    """The winner's value; what it raises (a timeout, a failed child) is this call's failure."""
    try:
        return fn(*args)
    except Exception as exc:
        raise call.failure(exc) from None


# ---------------------------------------------------------------- the waits of other modules


class _SleepWait:
    """``dp.sleep`` raced: a deadline."""

    wake: tuple[str, str] | None = None

    def __init__(self, duration: Any) -> None:
        seconds = (
            duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)
        )
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"dp.sleep needs a duration of 0 or more seconds, got {duration!r}")
        self.seconds: float | None = seconds
        self.what = f"sleep {seconds:g}s"

    async def poll(self, ctx: RunContext) -> Taken | None:
        return None

    def at_deadline(self) -> Any:
        return None

    def restore(self, record: Any) -> Any:
        return None


class _InputWait:
    """``dp.await_input`` raced: the next value for the input, taken only if it wins."""

    def __init__(self, name: str, timeout: float | None, default: Any) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError("an input name is a non-empty string of at most 200 characters")
        if timeout is not None and (float(timeout) < 0 or timeout != timeout):
            raise ValueError(f"a timeout is 0 or more seconds, got {timeout!r}")
        self.name = name
        self.what = f"input {name}"
        self.seconds = None if timeout is None else float(timeout)
        self.wake: tuple[str, str] | None = ("input", name)
        self.default = default

    async def poll(self, ctx: RunContext) -> Taken | None:
        found = await ctx.host.fetch_input(ctx.run_id, self.name)
        if found is None:
            return None
        input_id, value = found
        return Taken(value=value, record=value, consume={"consume_input": input_id})

    def at_deadline(self) -> Any:
        from ..errors import InputTimeout
        from .inputs import MISSING

        if self.default is not MISSING:
            return self.default
        raise InputTimeout(self.name, float(self.seconds or 0))

    def restore(self, record: Any) -> Any:
        return record


def _register_builtin() -> None:
    from .inputs import await_input
    from .sleep import sleep

    register(sleep, lambda a: _SleepWait(a["duration"]))
    register(await_input, lambda a: _InputWait(a["name"], a["timeout"], a["default"]))


_register_builtin()


class ChildWait:
    """A child run finishing, raced: for a child handle's ``result()`` (``@raceable(lambda a:
    ChildWait(a["self"].run_id))``). Its value is the child's output; a child that failed, was
    cancelled or aborted raises :class:`~durapipe.errors.SubpipelineFailed` (recorded, so a
    replay raises it again)."""

    seconds: float | None = None

    def __init__(self, child_run_id: str) -> None:
        self.child_run_id = child_run_id
        self.what = f"child {child_run_id}"
        self.wake: tuple[str, str] | None = ("child", child_run_id)

    async def poll(self, ctx: RunContext) -> Taken | None:
        outcome = await ctx.host.child_outcome(self.child_run_id)
        if outcome is None:
            return None
        status, output, error = outcome
        return Taken(value=output, record={"status": status, "output": output, "error": error})

    def at_deadline(self) -> Any:  # no deadline of its own
        return None

    def restore(self, record: Any) -> Any:
        from .._kinds import RunStatus
        from ..errors import SubpipelineFailed

        if record.get("status") != RunStatus.COMPLETED:
            raise SubpipelineFailed(self.child_run_id, record.get("error"))
        return record.get("output")
