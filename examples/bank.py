"""A bank: money moved between accounts by @dp.transaction, each transfer exactly once.

durapipe run examples/bank.py:bank --input amount=12.50 --input times=3

Each transfer's UPDATEs and its checkpoint commit in one transaction of the durapipe database
(here ./durapipe.db): killed at any instant and resumed, the run applies every transfer once,
and the money in the bank stays the same. Amounts are Decimals and the balances a dataclass:
typed values come back as their annotated types, live and on replay.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection

import durapipe as dp

OPENING = {"alice": 100_00, "bob": 100_00}  # cents


@dataclasses.dataclass(frozen=True)
class Balances:
    alice: Decimal
    bob: Decimal


def _balances(conn: Connection) -> Balances:
    rows = conn.execute(text("SELECT owner, cents FROM bank_example")).all()
    cents: dict[str, int] = {str(owner): int(c) for owner, c in rows}
    return Balances(alice=Decimal(cents["alice"]).scaleb(-2), bob=Decimal(cents["bob"]).scaleb(-2))


@dp.transaction
def open_accounts(conn: Connection) -> Balances:
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS bank_example "
            "(owner VARCHAR(20) PRIMARY KEY, cents BIGINT NOT NULL)"
        )
    )
    for owner, cents in OPENING.items():
        conn.execute(
            text("INSERT INTO bank_example VALUES (:o, :c) ON CONFLICT (owner) DO NOTHING"),
            {"o": owner, "c": cents},
        )
    return _balances(conn)


@dp.transaction
def transfer(conn: Connection, src: str, dst: str, amount: Decimal) -> Balances:
    cents = int(amount * 100)
    move = "UPDATE bank_example SET cents = cents + :c WHERE owner = :o"
    conn.execute(text(move), {"c": -cents, "o": src})
    conn.execute(text(move), {"c": cents, "o": dst})
    after = _balances(conn)
    if getattr(after, src) < 0:  # raising rolls the whole transfer back
        raise ValueError(f"{src} cannot pay {amount}: the balance would be {getattr(after, src)}")
    return after


@dp.pipeline(version="1")
async def bank(amount: Decimal = Decimal("12.50"), times: int = 3) -> Balances:
    before = await open_accounts()
    dp.logger.info("before: alice %s, bob %s", before.alice, before.bob)
    after = before
    for _ in range(times):
        after = await transfer("alice", "bob", amount)
    assert after.alice + after.bob == before.alice + before.bob  # Decimals: exact
    return after
