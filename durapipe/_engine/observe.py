"""Hooks through which tracing and metrics watch executions (``durapipe.tracing``, metrics).

An :class:`Observer` hears of a live execution of a run beginning and ending, and of each
journaled call it makes *for real*: a call replayed from the history reports nothing, so a
resumed run's trace holds each recorded call once (plus the attempts that really ran again).
A dry execution (``upgrade check``, the testing kit's replay) has no observer at all.

Nothing is observed unless something registered an observer with :func:`add`: a context then
takes :func:`active` once, and every hook point is one ``is not None`` test when it is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .journaled import Call
    from .run import RunContext


class Observer:
    """What an observer may hear of. Every method does nothing unless overridden."""

    def run_begin(self, ctx: RunContext) -> None:
        """A live execution of ``ctx``'s run begins (in this process)."""

    def run_end(self, ctx: RunContext, outcome: str) -> None:
        """It ended: ``outcome`` is an ``Outcome`` (completed, suspended, lost...)."""

    def call_begin(self, ctx: RunContext, call: Call) -> None:
        """A journaled call with no recorded completion runs for real."""

    def call_event(self, ctx: RunContext, event: dict[str, Any]) -> None:
        """An event at a call's key was written durably (its completion, a retry, a start)."""

    def carrier(self, ctx: RunContext | None, key: str | None) -> dict[str, str]:
        """Headers that link work started elsewhere to the call at ``key`` of ``ctx`` (key
        None: the run; ctx None: a run this process starts, outside any run)."""
        return {}


class _Fanout(Observer):
    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def run_begin(self, ctx: RunContext) -> None:
        for o in self.observers:
            o.run_begin(ctx)

    def run_end(self, ctx: RunContext, outcome: str) -> None:
        for o in self.observers:
            o.run_end(ctx, outcome)

    def call_begin(self, ctx: RunContext, call: Call) -> None:
        for o in self.observers:
            o.call_begin(ctx, call)

    def call_event(self, ctx: RunContext, event: dict[str, Any]) -> None:
        for o in self.observers:
            o.call_event(ctx, event)

    def carrier(self, ctx: RunContext | None, key: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for o in self.observers:
            out.update(o.carrier(ctx, key))
        return out


_observers: list[Observer] = []
_active: Observer | None = None


def add(observer: Observer) -> None:
    """Observe every execution that begins from now on, in this process."""
    if observer not in _observers:
        _observers.append(observer)
    _refresh()


def remove(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)
    _refresh()


def active() -> Observer | None:
    """The observer of executions beginning now: None when nothing observes."""
    return _active


def _refresh() -> None:
    global _active
    if not _observers:
        _active = None
    elif len(_observers) == 1:
        _active = _observers[0]
    else:
        _active = _Fanout(list(_observers))
