"""@dp.transaction moving money between rows of the durapipe database (tests of exactly-once).

Each run keeps its own accounts (keyed by its run id), so many runs share one database. Every
transfer also inserts a row into ``bank_applied``: a transfer applied twice shows as two rows.
``bank`` moves it with plain ``def`` transactions (a ``Connection``), ``bank_async`` with
``async def`` ones (an ``AsyncConnection``, on SQLite too): the same statements, the same plan.
"""

from __future__ import annotations

import asyncio
import os
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

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


TABLES = (
    "CREATE TABLE IF NOT EXISTS bank_accounts (run_id VARCHAR(64), id INT, balance INT, "
    "PRIMARY KEY (run_id, id))",
    "CREATE TABLE IF NOT EXISTS bank_applied (run_id VARCHAR(64), n INT)",
)
OPEN = text("INSERT INTO bank_accounts VALUES (:r, :i, :b)")
MOVE = text("UPDATE bank_accounts SET balance = balance + :a WHERE run_id = :r AND id = :i")
APPLIED = text("INSERT INTO bank_applied VALUES (:r, :n)")


def pause() -> float:
    """Seconds a transfer waits between its two updates (a window for a SIGKILL)."""
    return float(os.environ.get("BANK_PAUSE", "0"))


@dp.transaction
def open_accounts(conn: Connection) -> int:
    run = dp.context().run_id
    for ddl in TABLES:
        conn.execute(text(ddl))
    for i in range(ACCOUNTS):
        conn.execute(OPEN, {"r": run, "i": i, "b": BALANCE})
    return ACCOUNTS * BALANCE


@dp.transaction
def transfer(conn: Connection, n: int, src: int, dst: int, amount: int) -> int:
    run = dp.context().run_id
    conn.execute(MOVE, {"a": -amount, "r": run, "i": src})
    if pause():
        time.sleep(pause())
    conn.execute(MOVE, {"a": amount, "r": run, "i": dst})
    conn.execute(APPLIED, {"r": run, "n": n})
    return n


@dp.pipeline(version="1")
async def bank(transfers: int = 10) -> int:
    await open_accounts()
    for n, src, dst, amount in plan(transfers):
        await transfer(n, src, dst, amount)
    return transfers


@dp.transaction
async def open_accounts_async(conn: AsyncConnection) -> int:
    assert isinstance(conn, AsyncConnection), type(conn)
    run = dp.context().run_id
    for ddl in TABLES:
        await conn.execute(text(ddl))
    for i in range(ACCOUNTS):
        await conn.execute(OPEN, {"r": run, "i": i, "b": BALANCE})
    return ACCOUNTS * BALANCE


@dp.transaction
async def transfer_async(conn: AsyncConnection, n: int, src: int, dst: int, amount: int) -> int:
    assert isinstance(conn, AsyncConnection), type(conn)
    run = dp.context().run_id
    await conn.execute(MOVE, {"a": -amount, "r": run, "i": src})
    if pause():
        await asyncio.sleep(pause())  # the loop runs on meanwhile (the write lock is held)
    await conn.execute(MOVE, {"a": amount, "r": run, "i": dst})
    await conn.execute(APPLIED, {"r": run, "n": n})
    return n


@dp.pipeline(version="1")
async def bank_async(transfers: int = 10) -> int:
    await open_accounts_async()
    for n, src, dst, amount in plan(transfers):
        await transfer_async(n, src, dst, amount)
    return transfers
