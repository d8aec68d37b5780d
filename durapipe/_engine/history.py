"""A run's history as replay reads it: the recorded events indexed by step key."""

from __future__ import annotations

from typing import Any

from .. import _serde
from .._kinds import COMPLETIONS, EventKind
from .repair import apply_edits


class History:
    """The events of a run by step key, the patches it has passed, and which keys replay reached.

    Built once per execution; the journaled calls look their key up in ``records`` and add it to
    ``visited``. Replay is done (the run is at its frontier) once every recorded key is visited.
    """

    __slots__ = ("records", "visited", "patches", "last_seq")

    def __init__(self, events: list[Any]) -> None:
        self.last_seq: int = events[-1].seq if events else 0
        self.records: dict[str, list[Any]] = {}
        for ev in events:
            if ev.step is not None:
                self.records.setdefault(ev.step, []).append(ev)
        # A resumed failed run retries the step whose failure failed it — unless the pipeline
        # handled that failure (made calls after it): then the failure replays as recorded.
        for ev in events:
            if ev.kind == EventKind.RUN_FAILED and ev.data:
                origin = _serde.loads(ev.data).get("step")
                if (
                    origin
                    and origin in self.records
                    and handled_failure(events, ev, origin) is None
                ):
                    # Keep the earlier attempts' retry events (they count tries); drop the failure.
                    kept = [
                        e
                        for e in self.records[origin]
                        if e.seq > ev.seq or (e.seq < ev.seq and e.kind == EventKind.STEP_RETRY)
                    ]
                    if kept:
                        self.records[origin] = kept
                    else:
                        del self.records[origin]
        # durapipe edit: an edit supersedes a recorded result, and may cut the calls after it.
        apply_edits(self.records, events)
        self.patches: dict[str, bool] = {
            ev.name: True for ev in events if ev.kind == EventKind.PATCH_MARKER and ev.name
        }
        self.visited: set[str] = set()

    def at_frontier(self) -> bool:
        return len(self.visited) >= len(self.records)

    def unvisited(self) -> list[str]:
        """The recorded keys replay has not reached, in program order."""
        return sorted((k for k in self.records if k not in self.visited), key=_key_order)


def _key_order(key: str) -> list[int]:
    return [int(x) for x in key.split("/") if x.isdigit()]


def _after_in_program(key: str, other: str) -> bool:
    """Whether call ``other`` comes after call ``key`` in code that saw ``key``'s outcome: later
    in the same branch (or nested under a later call of it), or in an enclosing branch after the
    dp.gather holding ``key``. A call in a sibling branch of a dp.gather ran concurrently."""
    a, b = key.split("/"), other.split("/")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            # Even positions count calls within a branch; odd ones number a gather's branches.
            return i % 2 == 0 and x.isdigit() and y.isdigit() and int(y) > int(x)
    return False


def handled_failure(history: list[Any], failed: Any, key: str) -> tuple[Any, Any] | None:
    """For a ``run_failed`` event whose error came from the call at ``key``: ``(the failure,
    the first call recorded after it by code that saw it)`` when the pipeline handled that
    failure and went on before it failed, else None.

    Resume may retry only a failure that was the last thing the pipeline did: once calls are
    recorded after it, running the call again (and taking another path) would contradict them.
    """
    failure = None
    for ev in history:
        if ev.seq >= failed.seq:
            break
        if ev.step == key and ev.kind in COMPLETIONS:
            failure = ev
    if failure is None:
        return None
    for ev in history:
        if ev.seq >= failed.seq:
            break
        if ev.seq > failure.seq and ev.step and _after_in_program(key, ev.step):
            return failure, ev
    return None


def last_handled_failure(history: list[Any]) -> tuple[Any, Any] | None:
    """:func:`handled_failure` for the run's last ``run_failed`` event (what resume would do).

    None once the run's history was edited after that failure: the edit decides what replays."""
    for ev in reversed(history):
        if ev.kind == EventKind.RESULT_EDITED:
            return None
        if ev.kind == EventKind.RUN_FAILED:
            origin = (_serde.loads(ev.data) or {}).get("step") if ev.data else None
            return handled_failure(history, ev, origin) if origin else None
    return None
