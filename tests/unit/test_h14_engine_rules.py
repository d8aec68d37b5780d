"""Which recorded failure resume may retry (issue #14, item 8a): the rule on plain histories."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from durapipe._engine import error_data, error_message, last_handled_failure


def _history(*rows: tuple[str, str | None]) -> list[Any]:
    out = []
    for seq, (kind, step) in enumerate(rows, start=1):
        data = (
            json.dumps({"type": "E", "message": "m", "step": step})
            if kind == "run_failed"
            else None
        )
        out.append(
            SimpleNamespace(
                seq=seq,
                kind=kind,
                step=None if kind == "run_failed" else step,
                label=step,
                name=step,
                data=data,
            )
        )
    return out


def test_a_failure_with_calls_after_it_in_its_branch_or_an_enclosing_one_was_handled() -> None:
    saga = _history(
        ("run_started", None),
        ("step_completed", "1"),  # withdraw
        ("step_failed", "2"),  # deposit
        ("step_completed", "3"),  # refund: the pipeline went on
        ("run_failed", "2"),
    )
    found = last_handled_failure(saga)
    assert found is not None and (found[0].step, found[1].step) == ("2", "3")
    # In a gather branch, a later call of the same branch, a call nested under a later call
    # of an enclosing branch, and a call after the gather all saw the failure.
    for later in ("4/0/3", "5", "6/1/1"):
        h = _history(("step_failed", "4/0/2"), ("step_completed", later), ("run_failed", "4/0/2"))
        assert last_handled_failure(h) is not None, later


def test_a_failure_that_was_the_last_thing_done_is_retried() -> None:
    assert (
        last_handled_failure(
            _history(("step_completed", "1"), ("step_failed", "2"), ("run_failed", "2"))
        )
        is None
    )
    # Siblings of a dp.gather that finished after the failure did not see it.
    h = _history(
        ("step_failed", "3/0/1"),
        ("step_completed", "3/1/1"),
        ("step_started", "3/2/4/0/1"),
        ("run_failed", "3/0/1"),
    )
    assert last_handled_failure(h) is None
    # The last run_failed is what counts; a run failing on its own (no step) replays.
    assert last_handled_failure(_history(("step_completed", "1"), ("run_failed", None))) is None


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("nope")


def test_an_exception_whose_str_raises_is_still_turned_into_an_error() -> None:
    assert error_message(_Unprintable()) == "its message could not be rendered (RuntimeError: nope)"
    data = error_data(_Unprintable(), step="2")
    assert data["type"] == "_Unprintable" and data["step"] == "2"
    assert data["message"] == "its message could not be rendered (RuntimeError: nope)"
