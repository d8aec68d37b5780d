"""Typed values: inputs, step results and child outputs come back as their annotated types,
equal live and on replay (tests/pipelines/typed_values.py), on both databases; inputs that do
not convert, and floats that are not finite, are refused in one line naming where."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.errors import InvalidInput
from durapipe.testing import crash_run, resume_run, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import typed_values as tv  # noqa: E402

pytestmark = pytest.mark.asyncio

WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def _seen() -> dict[str, Any]:
    out = dict(tv.SEEN)
    tv.SEEN.clear()
    return out


def _check_types(seen: dict[str, Any]) -> None:
    when, price, color = seen["inputs"]
    assert isinstance(when, dt.datetime) and when.utcoffset() == dt.timedelta(hours=2)
    assert when == WHEN and isinstance(price, Decimal) and str(price) == "1.50"
    assert color is tv.Color.BLUE
    order = seen["order"]
    assert isinstance(order, tv.Order) and isinstance(order.id, uuid.UUID)
    assert isinstance(order.lines, tuple) and isinstance(order.lines[0], tv.Line)
    assert order.lines[0].price == Decimal("1.50") and isinstance(order.tags, set)
    assert order.color is tv.Color.BLUE and order.path == Path("/orders/1")
    assert order.blob == b"\x00\xff\x10 binary" and order.note is None
    assert isinstance(order.previous, tv.Order) and order.previous.previous is None
    assert order.placed.utcoffset() == dt.timedelta(hours=2)
    assert type(order.due) is dt.date
    assert seen["total"] == Decimal("3.10") and isinstance(seen["total"], Decimal)
    assert seen["noted"] == ("1", order.due, frozenset({1, 2}))
    receipt = seen["receipt"]
    assert isinstance(receipt, tv.Receipt) and receipt.order_id == order.id
    assert receipt.total == Decimal("3.10") and receipt.at == WHEN
    assert receipt.lines == list(order.lines)


async def test_typed_values_are_equal_live_and_replayed(store: Any) -> None:
    tv.SEEN.clear()
    view = await run_pipeline(
        store, tv.typed_parent, when=WHEN, price=Decimal("1.50"), color="blue"
    )
    assert view.status == "completed", view.error
    assert view.output == "3.10"
    live = _seen()
    _check_types(live)
    child_order, child_when = live["child_inputs"]
    assert child_order == live["order"] and child_when == WHEN  # a child's typed inputs

    # Crash after the last step, resume: everything the code sees now is replayed.
    crashed = await crash_run(
        store,
        tv.typed_parent,
        after="step_completed:mark",
        when=WHEN,
        price=Decimal("1.50"),
        color=tv.Color.BLUE,
    )
    first = _seen()
    _check_types(first)
    resumed = await resume_run(store, tv.typed_parent, crashed.run_id)
    assert resumed.status == "completed", resumed.error
    replayed = _seen()
    _check_types(replayed)
    for key in ("inputs", "order", "total", "noted", "receipt"):
        assert replayed[key] == first[key], key
        assert type(replayed[key]) is type(first[key]), key


async def test_an_input_that_does_not_convert_is_refused(store: Any) -> None:
    client = dp.Client(store)
    with pytest.raises(InvalidInput) as info:
        await client.start(tv.typed_parent, when="the fifth of May", price=Decimal(1))
    msg = str(info.value)
    assert "\n" not in msg
    assert "input 'when' of pipeline 'typed_parent' must be datetime" in msg
    with pytest.raises(
        InvalidInput, match="input 'color' of pipeline 'typed_parent' must be Color"
    ):
        await client.start(tv.typed_parent, when=WHEN, price=Decimal(1), color="green")
    assert await client.list() == []  # nothing stored


async def test_a_float_that_is_not_finite_is_refused_where_it_is(store: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        await dp.Client(store).start(tv.not_finite, a=float("inf"))
    assert (
        "input 'a' of pipeline 'not_finite' must be float: Input should be a finite number"
        in str(info.value)
    )
    view = await run_pipeline(store, tv.not_finite, a=1.0, b=0.0)
    assert view.status == "failed"
    msg = view.error["message"]
    assert "the result of step ratio_1" in msg and "not finite" in msg and "\n" not in msg


async def test_scalar_inputs_are_converted_to_their_annotated_type(store: Any) -> None:
    # As `--input name=123 --input ratio=3 --input flag=yes` parse: JSON numbers and a string.
    view = await run_pipeline(store, tv.scalars, name=123, n="5", ratio=3, flag="yes")
    assert view.status == "completed", view.error
    assert view.output == ["123", 5, 3.0, True]
    assert view.inputs == {"name": "123", "n": 5, "ratio": 3.0, "flag": True}  # stored converted
    for bad, why in (
        ({"n": "abc"}, "input 'n' of pipeline 'scalars' must be int"),
        ({"ratio": "nan"}, "input 'ratio' of pipeline 'scalars' must be float | None"),
        ({"flag": "maybe"}, "input 'flag' of pipeline 'scalars' must be bool"),
    ):
        with pytest.raises(InvalidInput, match=why):
            await dp.Client(store).start(tv.scalars, name="x", **bad)
