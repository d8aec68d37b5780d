"""Fork and edit as replay reads them: which calls a fork keeps, and how an edit supersedes a
recorded result (``durapipe fork``, ``durapipe edit``; docs/repair.md).

Step keys are ordered as the program makes its calls: ``3`` before ``4``; in a ``dp.gather`` at
key ``5`` the branches' calls ``5/0/1``, ``5/0/2``, ``5/1/1``... come after ``4``, branch by
branch, and before ``6``. A fork from key K keeps the calls ordered before K; an edit at K that
re-runs what came after cuts the calls ordered after K.

An edit is an event (``result_edited``) appended at the key it edits; nothing is deleted. When
:class:`~durapipe._engine.history.History` reads a history, each edit (in the order they were
made) puts a completion carrying the new value in front of the key's events, and, when it asks
for the later calls to run again, drops the events recorded before it at every key ordered after
its own. Calls made after the edit are recorded after it, so they are kept.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from .. import _serde
from .._kinds import COMPLETIONS, EventKind, Family, family

# The completion an edit stands for: built from the edit event, never stored.
Edited = namedtuple(
    "Edited", ("run_id", "seq", "kind", "step", "name", "label", "at", "attempt", "data")
)

# What an edited call of each family completes with, and where its value goes.
_COMPLETION = {
    Family.STEP: (EventKind.STEP_COMPLETED, "result"),
    Family.INPUT: (EventKind.INPUT_RECEIVED, "value"),
    Family.CHILD: (EventKind.CHILD_COMPLETED, "output"),
    Family.VALUE: (EventKind.VALUE_RECORDED, "value"),
}
EDITABLE = tuple(_COMPLETION)


def key_parts(key: str) -> tuple[int, ...]:
    return tuple(int(x) for x in key.split("/"))


def valid_key(key: str) -> bool:
    parts = key.split("/")
    return all(p.isdigit() for p in parts) and len(parts) % 2 == 1


def before(key: str, point: str) -> bool:
    """Whether the call at ``key`` comes before the call at ``point`` in program order."""
    return key_parts(key) < key_parts(point)


def apply_edits(records: dict[str, list[Any]], events: list[Any]) -> None:
    """Apply the ``result_edited`` events of ``events`` to ``records`` (see the module doc)."""
    for ed in events:
        if ed.kind != EventKind.RESULT_EDITED or not ed.step or not ed.data:
            continue
        d = _serde.loads(ed.data) or {}
        key = ed.step
        if d.get("rerun_after"):
            for other in list(records):
                if other != key and before(key, other):
                    kept = [e for e in records[other] if e.seq > ed.seq]
                    if kept:
                        records[other] = kept
                    else:
                        del records[other]
        kind, field = _COMPLETION[d["family"]]
        done = {field: d.get("new")}
        if d["family"] == Family.CHILD:
            done["child_run_id"] = d.get("child_run_id")
        raw = [e for e in records.get(key, []) if not isinstance(e, Edited)]
        records[key] = [
            Edited(
                ed.run_id,
                ed.seq,
                kind,
                key,
                ed.name,
                ed.label,
                ed.at,
                ed.attempt,
                _serde.dumps(done),
            ),
            *raw,
        ]


def completion(evs: list[Any]) -> Any | None:
    """The completion replay would return from a key's events (an edit's, if edited)."""
    return next((e for e in evs if e.kind in COMPLETIONS), None)


def call_of(evs: list[Any]) -> tuple[str, str | None, str | None]:
    """-> (family, name, label) of the call whose events these are."""
    first = next((e for e in evs if e.kind != EventKind.RESULT_EDITED), evs[0])
    if first.kind == EventKind.RESULT_EDITED:
        return str((_serde.loads(first.data) or {}).get("family")), first.name, first.label
    return family(first.kind), first.name, first.label


def fork_events(records: dict[str, list[Any]], point: str) -> list[Any]:
    """The recorded events a fork from ``point`` copies, in their order: every event of each
    completed call ordered before ``point`` as replay reads it (``records`` of a History).
    A call before ``point`` that had not completed is left out: it runs again."""
    out = []
    for key, evs in records.items():
        if before(key, point) and completion(evs) is not None:
            out += [e for e in evs if not isinstance(e, Edited)]
    return sorted(out, key=lambda e: e.seq)
