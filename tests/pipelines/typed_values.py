"""Pipelines whose inputs, step results and child outputs are typed (tests of typed values).

What the pipeline code sees is appended to ``SEEN`` (in this process), so a test can compare a
live execution with a replayed one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic

import durapipe as dp

SEEN: list[tuple[str, Any]] = []


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    price: Decimal
    qty: int


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    due: dt.date
    lines: tuple[Line, ...]
    tags: set[str]
    color: Color
    path: Path
    blob: bytes
    note: str | None = None
    previous: Order | None = None


class Receipt(pydantic.BaseModel):
    order_id: uuid.UUID
    total: Decimal
    at: dt.datetime
    lines: list[Line]


@dp.step
def make_order(when: dt.datetime, color: Color, price: Decimal) -> Order:
    first = Order(
        id=uuid.UUID(int=1),
        placed=when - dt.timedelta(days=1),
        due=when.date(),
        lines=(),
        tags=set(),
        color=color,
        path=Path("/orders/0"),
        blob=b"",
    )
    return Order(
        id=uuid.uuid4(),
        placed=when,
        due=when.date() + dt.timedelta(days=3),
        lines=(Line("a", price, 2), Line("b", Decimal("0.10"), 1)),
        tags={"x", "y"},
        color=color,
        path=Path("/orders/1"),
        blob=b"\x00\xff\x10 binary",
        previous=first,
    )


@dp.step
async def total(order: Order) -> Decimal:
    return sum((line.price * line.qty for line in order.lines), Decimal(0))


@dp.step
def noted(order: Order) -> tuple[str, dt.date | None, frozenset[int]]:
    return (order.path.name, order.due, frozenset({1, 2}))


@dp.pipeline(name="typed_child", version="1")
async def typed_child(order: Order, when: dt.datetime) -> Receipt:
    SEEN.append(("child_inputs", (order, when)))
    t = await total(order)
    return Receipt(order_id=order.id, total=t, at=when, lines=list(order.lines))


@dp.step
def mark() -> None:
    return None


@dp.pipeline(name="typed_parent", version="1")
async def typed_parent(when: dt.datetime, price: Decimal, color: Color = Color.RED) -> str:
    SEEN.append(("inputs", (when, price, color)))
    order = await make_order(when, color, price)
    SEEN.append(("order", order))
    SEEN.append(("total", await total(order)))
    SEEN.append(("noted", await noted(order)))
    receipt = await dp.run_subpipeline(typed_child, order=order, when=when)
    SEEN.append(("receipt", receipt))
    await mark()
    return str(receipt.total)


@dp.step
def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dp.pipeline(name="not_finite", version="1")
async def not_finite(a: float = 1.0, b: float = 0.0) -> float:
    return await ratio(a, b)


@dp.pipeline(name="scalars", version="1")
async def scalars(
    name: str, n: int = 1, ratio: float | None = None, flag: bool = False
) -> list[Any]:
    return [name, n, ratio, flag]
