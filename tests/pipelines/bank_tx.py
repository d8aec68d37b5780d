"""@dp.transaction moving money between rows of the durapipe database (tests of exactly-once).

Each run keeps its own accounts (keyed by its run id), so many runs share one database. Every
transfer also inserts a row into ``bank_applied``: a transfer applied twice shows as two rows.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection

import durapipe as dp

ACCOUNTS = 4
BALANCE = 1000


def plan(transfers: int) -> list[tuple[int, int, int, int]]:
    """The transfers a run makes: (number, from, to, amount)."""
    return [(i, i % ACCOUNTS, (i * 3 + 1) % ACCOUNTS, 7 + i) for i in range(transfers)]


def expected_balances(transfers: int) -> list[int]:
    out = [BALANCE] * ACCOUNTS
    for _i, src, dst, amount in plan(transfers):
        out[src] -= amount
        out[dst] += amount
    return out


@dp.transaction
def open_accounts(conn: Connection) -> int:
    run = dp.context().run_id
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS bank_accounts (run_id VARCHAR(64), id INT, balance INT, "
            "PRIMARY KEY (run_id, id))"
        )
    )
    conn.execute(text("CREATE TABLE IF NOT EXISTS bank_applied (run_id VARCHAR(64), n INT)"))
    for i in range(ACCOUNTS):
        conn.execute(
            text("INSERT INTO bank_accounts VALUES (:r, :i, :b)"), {"r": run, "i": i, "b": BALANCE}
        )
    return ACCOUNTS * BALANCE


@dp.transaction
def transfer(conn: Connection, n: int, src: int, dst: int, amount: int) -> int:
    run = dp.context().run_id
    move = "UPDATE bank_accounts SET balance = balance + :a WHERE run_id = :r AND id = :i"
    conn.execute(text(move), {"a": -amount, "r": run, "i": src})
    pause = float(os.environ.get("BANK_PAUSE", "0"))
    if pause:
        time.sleep(pause)  # a window for a SIGKILL between the two updates
    conn.execute(text(move), {"a": amount, "r": run, "i": dst})
    conn.execute(text("INSERT INTO bank_applied VALUES (:r, :n)"), {"r": run, "n": n})
    return n


@dp.pipeline(version="1")
async def bank(transfers: int = 10) -> int:
    await open_accounts()
    for n, src, dst, amount in plan(transfers):
        await transfer(n, src, dst, amount)
    return transfers
