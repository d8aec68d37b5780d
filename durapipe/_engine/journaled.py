"""The journaled call: the one mechanism every primitive (dp.step, dp.exec, dp.sleep...) uses.

A primitive is an ``async def`` that

1. gets the run and its branch with :func:`~durapipe._engine.context.current` (and checks its
   arguments);
2. calls :func:`begin` with its family and name. Synchronously, before any await, this takes the
   next step key of the branch, delivers a pending stop or cancellation, looks the key up in the
   history and checks that the code made the same kind of call with the same name there
   (:class:`~durapipe.errors.NonDeterminismError` if not). It returns a :class:`Call`;
3. when ``call.done`` is set the call already completed: it returns the recorded result or
   raises the recorded failure (tagged with :func:`Call.failure`), decoded from ``call.done``;
4. otherwise runs for real, recording its events at its key with :meth:`Call.record` /
   :meth:`Call.post`, and records its completion (an event in ``COMPLETIONS``) before it
   returns: from then on replay returns that instead of running it again.

``call.events`` holds what an earlier execution recorded at the key short of a completion (a
step's start or retries, a timer's wake-up time, a child's id): a call that was in flight when
its run stopped continues from there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from .._kinds import COMPLETIONS, family
from ..errors import NonDeterminismError, RunInterrupted
from .failures import tag_step

if TYPE_CHECKING:
    from .context import Branch
    from .run import RunContext

E = TypeVar("E", bound=BaseException)
_NOTHING: tuple[Any, ...] = ()


class ReplayFrontier(RunInterrupted):
    """A dry replay reached the first call that has no recorded result: everything before matched."""


class Call:
    """One journaled call: its step key, name and label, and what the history holds for it."""

    __slots__ = ("ctx", "key", "name", "label", "done", "events", "family")

    def __init__(
        self,
        ctx: RunContext,
        key: str,
        name: str,
        label: str | None,
        done: Any,
        events: list[Any] | tuple[Any, ...],
        family: str = "",
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.name = name
        self.label = label
        self.done: Any = done  # the completion recorded at the key, if the call completed
        self.events = events  # every event recorded at the key
        self.family = family  # a Family: step, timer, input, child...

    def first(self, kind: str) -> Any | None:
        """The first event of ``kind`` recorded at this call's key."""
        return next((e for e in self.events if e.kind == kind), None)

    def emit(self, stream: str, line: str) -> None:
        """A line of the run's log, under this call."""
        self.ctx.emit(self.key, self.label, stream, line)

    def event(self, kind: str, data: str | None = None) -> dict[str, Any]:
        """An event of this call (``data`` already JSON), for :meth:`RunContext.write`."""
        return self.ctx.event(kind, step=self.key, name=self.name, label=self.label, data=data)

    async def record(self, kind: str, data: Any = None, **kw: Any) -> None:
        """Write an event of this call (``data`` as JSON) and ``kw`` (run_update...) durably."""
        await self.ctx.record(
            kind, step=self.key, name=self.name, label=self.label, data=data, **kw
        )

    def post(self, kind: str) -> None:
        """Record an event of this call without waiting for it (see :meth:`RunContext.post`)."""
        self.ctx.post(self.event(kind))

    def failure(self, exc: E) -> E:
        """``exc``, marked as this call's failure (the run's failure then names this step)."""
        return tag_step(exc, self.key)


def begin(
    ctx: RunContext,
    branch: Branch,
    family_: str,
    name: str,
    label: str | None = None,
    *,
    numbered: bool = True,
) -> Call:
    """Take the next step key of ``branch`` and find what the history holds there.

    ``label`` is the call's name in the console (``label`` plus a counter unless not
    ``numbered``; None: no label). Raises what a stop, a lost lease or a pending cancellation
    asks for, :class:`~durapipe.errors.NonDeterminismError` when the history has another kind
    of call or another name at the key, and ``ReplayFrontier`` in a dry replay at the first
    call with no recorded completion.
    """
    key = branch.next_key()
    if label is not None and numbered:
        label = ctx.label(label)
    ctx.check(key)
    evs = ctx.records.get(key)
    if not evs:
        _at_frontier(ctx, key)
        call = Call(ctx, key, name, label, None, _NOTHING, family_)
        if ctx.obs is not None:
            ctx.obs.call_begin(ctx, call)
        return call
    ctx.visited.add(key)
    first = evs[0]
    if family(first.kind) != family_ or (first.name or "") != name:
        err = NonDeterminismError(
            ctx.run_id, key, f"{family(first.kind)} {first.name!r}", f"{family_} {name!r}"
        )
        ctx.fatal = err
        raise err
    done = next((e for e in evs if e.kind in COMPLETIONS), None)
    if done is None:
        _at_frontier(ctx, key)
    call = Call(ctx, key, name, label, done, evs, family_)
    if done is None and ctx.obs is not None:
        ctx.obs.call_begin(ctx, call)
    return call


def _at_frontier(ctx: RunContext, key: str) -> None:
    """A call the history has not completed: a dry replay stops here, and a pending
    cancellation is delivered here (once)."""
    if ctx.dry:
        raise ReplayFrontier(key)
    if ctx.cancel_pending and not ctx.cancel_delivered:
        ctx.cancel_delivered = True
        raise asyncio.CancelledError("durapipe: run cancelled")
