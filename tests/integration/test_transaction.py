"""@dp.transaction: a step's statements and its completion commit together, exactly once.

Money moves between rows of the durapipe database (tests/pipelines/bank_tx.py). A crash at a
random history write (the testing kit's crash points, before or after it) and a resume leave
the total conserved and every transfer applied once; a worker that lost its lease commits
nothing; a body that raises rolls back; PostgreSQL's serialization failures are retried.
Each runs with plain `def` bodies (a `Connection`) and `async def` ones (an `AsyncConnection`:
aiosqlite on SQLite, asyncpg on PostgreSQL), on both databases.
Real SIGKILLs of `durapipe run` are in tests/acceptance/test_transaction_kill.py.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

import durapipe as dp
from durapipe.errors import LeaseLost
from durapipe.testing import crash_run, record_commits, replay_run, resume_run, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import bank_tx  # noqa: E402

pytestmark = pytest.mark.asyncio

TRIALS = 47  # crash points per database and kind of body (+ 3 real SIGKILLs: the acceptance test)
TRANSFERS = 6

# The same transfers with plain `def` bodies and with `async def` ones.
BANKS = {"sync": bank_tx.bank, "async": bank_tx.bank_async}
TRANSFER = {"sync": bank_tx.transfer, "async": bank_tx.transfer_async}
body_kind = pytest.mark.parametrize("kind", ["sync", "async"])


async def _rows(store: Any, sql: str, **params: Any) -> list[Any]:
    return list(await store.run_read(lambda conn: conn.execute(text(sql), params).all()))


async def check_bank(store: Any, run_id: str, transfers: int) -> None:
    """Every transfer of the run applied once, the money conserved, the balances right."""
    applied = await _rows(store, "SELECT n FROM bank_applied WHERE run_id = :r", r=run_id)
    counts = Counter(r[0] for r in applied)
    assert counts == Counter(range(transfers)), f"run {run_id}: transfers applied {counts}"
    rows = await _rows(
        store, "SELECT balance FROM bank_accounts WHERE run_id = :r ORDER BY id", r=run_id
    )
    assert [r[0] for r in rows] == bank_tx.expected_balances(transfers)
    assert sum(r[0] for r in rows) == bank_tx.ACCOUNTS * bank_tx.BALANCE


@body_kind
async def test_transfers_are_applied_once_across_crashes(store: Any, kind: str) -> None:
    bank = BANKS[kind]
    view, commits = await record_commits(store, bank, transfers=TRANSFERS)
    assert view.status == "completed", view.error
    await check_bank(store, view.run_id, TRANSFERS)
    kinds = [e["kind"] for write in commits for e in write]
    assert kinds.count("transaction_committed") == TRANSFERS + 1  # each its own write
    rng = random.Random(17)
    for _ in range(TRIALS):
        k = rng.randint(1, len(commits) - 1)  # the last write is the run's end: nothing after
        where = {"before": k} if rng.random() < 0.5 else {"after": k}
        crashed = await crash_run(store, bank, transfers=TRANSFERS, **where)
        assert crashed.status == "running", (where, crashed.status)
        resumed = await resume_run(store, bank, crashed.run_id)
        assert resumed.status == "completed", (where, resumed.error)
        assert resumed.output == TRANSFERS
        await check_bank(store, crashed.run_id, TRANSFERS)
        seqs = [e["seq"] for e in await dp.Client(store).events(crashed.run_id)]
        assert seqs == list(range(1, len(seqs) + 1)), (where, seqs)


# A transaction's completion event, as the engine makes it (the tests calling the store add
# run_id and attempt).
_EVENT = {
    "seq": 999,
    "kind": "transaction_committed",
    "step": "9",
    "name": "transfer",
    "label": "transfer_9",
    "at": 0.0,
    "data": None,
}


@body_kind
async def test_a_lost_lease_commits_nothing(store: Any, kind: str) -> None:
    view = await run_pipeline(store, BANKS[kind], transfers=1)
    run_id = view.run_id
    row = await dp.Client(store).row(run_id)
    event = {**_EVENT, "run_id": run_id, "attempt": row.attempt}
    move = "UPDATE bank_accounts SET balance = balance + 500 WHERE run_id = :r AND id = 0"

    ran: list[object] = []

    def body(conn: Connection) -> str:
        ran.append(conn)
        conn.execute(text(move), {"r": run_id})
        return '{"result":1}'

    async def abody(conn: AsyncConnection) -> str:
        ran.append(conn)
        await conn.execute(text(move), {"r": run_id})
        return '{"result":1}'

    with pytest.raises(LeaseLost):  # the run is not leased to "someone-else" (it is ended)
        await store.run_transaction(
            run_id=run_id,
            owner="someone-else",
            attempt=row.attempt,
            event=event,
            body=abody if kind == "async" else body,
            is_async=kind == "async",
            label="transfer_9",
        )
    assert len(ran) == 1  # the body ran (its update was made), then the fence refused
    assert isinstance(ran[0], AsyncConnection if kind == "async" else Connection)
    await check_bank(store, run_id, 1)  # the +500 was rolled back with the refused event
    assert not [e for e in await dp.Client(store).events(run_id) if e["seq"] == 999]


@dp.transaction
def overdraw(conn: Connection, amount: int) -> int:
    run = dp.context().run_id
    conn.execute(
        text("UPDATE bank_accounts SET balance = balance - :a WHERE run_id = :r AND id = 0"),
        {"a": amount, "r": run},
    )
    (left,) = conn.execute(
        text("SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 0"), {"r": run}
    ).one()
    if left < 0:
        raise ValueError(f"account 0 would be overdrawn ({left})")
    return int(left)


@dp.transaction
async def overdraw_async(conn: AsyncConnection, amount: int) -> int:
    run = dp.context().run_id
    await conn.execute(
        text("UPDATE bank_accounts SET balance = balance - :a WHERE run_id = :r AND id = 0"),
        {"a": amount, "r": run},
    )
    (left,) = (
        await conn.execute(
            text("SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 0"), {"r": run}
        )
    ).one()
    if left < 0:
        raise ValueError(f"account 0 would be overdrawn ({left})")
    return int(left)


@dp.pipeline(name="overdraw", version="1")
async def overdraw_pipeline(amount: int, kind: str = "sync") -> int:
    await bank_tx.open_accounts()
    return await (overdraw_async(amount) if kind == "async" else overdraw(amount))


@body_kind
async def test_a_failing_body_rolls_back_and_fails_the_step(store: Any, kind: str) -> None:
    view = await run_pipeline(store, overdraw_pipeline, amount=5000, kind=kind)
    assert view.status == "failed"
    assert view.error is not None and "would be overdrawn" in view.error["message"]
    rows = await _rows(
        store, "SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 0", r=view.run_id
    )
    assert rows[0][0] == bank_tx.BALANCE  # the update was rolled back
    kinds = [e["kind"] for e in await dp.Client(store).events(view.run_id)]
    assert "transaction_failed" in kinds
    ok = await run_pipeline(store, overdraw_pipeline, amount=300, kind=kind)
    assert ok.status == "completed" and ok.output == bank_tx.BALANCE - 300


ATTEMPTS: list[int] = []


@dp.transaction
def conflicted(conn: Connection) -> int:
    """Refused for a conflict by the server on its first two tries (PostgreSQL), then done."""
    ATTEMPTS.append(1)
    conn.execute(text("CREATE TABLE IF NOT EXISTS tx_marks (n INT)"))
    conn.execute(text("INSERT INTO tx_marks VALUES (:n)"), {"n": len(ATTEMPTS)})
    if conn.dialect.name == "postgresql" and len(ATTEMPTS) <= 2:
        code = "40001" if len(ATTEMPTS) == 1 else "40P01"  # serialization failure, deadlock
        conn.execute(
            text(f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{code}'; END $$")
        )
    return len(ATTEMPTS)


@dp.transaction
async def conflicted_async(conn: AsyncConnection) -> int:
    """As ``conflicted``, with an AsyncConnection."""
    ATTEMPTS.append(1)
    await conn.execute(text("CREATE TABLE IF NOT EXISTS tx_marks (n INT)"))
    await conn.execute(text("INSERT INTO tx_marks VALUES (:n)"), {"n": len(ATTEMPTS)})
    if conn.dialect.name == "postgresql" and len(ATTEMPTS) <= 2:
        code = "40001" if len(ATTEMPTS) == 1 else "40P01"  # serialization failure, deadlock
        await conn.execute(
            text(f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{code}'; END $$")
        )
    return len(ATTEMPTS)


@dp.pipeline(name="conflicted", version="1")
async def conflicted_pipeline(kind: str = "sync") -> int:
    return await (conflicted_async() if kind == "async" else conflicted())


@body_kind
async def test_conflicts_run_the_transaction_again(store: Any, kind: str) -> None:
    ATTEMPTS.clear()
    view = await run_pipeline(store, conflicted_pipeline, kind=kind)
    assert view.status == "completed", view.error
    tries = 3 if not store.is_sqlite else 1  # SQLite serialises writers: no conflicts
    assert view.output == tries and len(ATTEMPTS) == tries
    # Only the attempt that committed left its row.
    assert [r[0] for r in await _rows(store, "SELECT n FROM tx_marks")] == [tries]


CONNECTIONS: list[object] = []


@dp.transaction
async def async_deposit(conn: AsyncConnection, amount: int) -> int:
    CONNECTIONS.append(conn)
    run = dp.context().run_id
    await conn.execute(
        text("UPDATE bank_accounts SET balance = balance + :a WHERE run_id = :r AND id = 1"),
        {"a": amount, "r": run},
    )
    return amount


@dp.pipeline(name="async_deposit", version="1")
async def async_deposit_pipeline() -> int:
    await bank_tx.open_accounts()
    return await async_deposit(25)


async def test_async_def_gets_an_async_connection_and_commits_once(store: Any) -> None:
    CONNECTIONS.clear()
    view = await run_pipeline(store, async_deposit_pipeline)
    assert view.status == "completed", view.error
    assert view.output == 25
    assert len(CONNECTIONS) == 1 and isinstance(CONNECTIONS[0], AsyncConnection)
    # aiosqlite on the SQLite file, asyncpg on PostgreSQL: the durapipe database either way.
    assert CONNECTIONS[0].dialect.driver == ("aiosqlite" if store.is_sqlite else "asyncpg")
    rows = await _rows(
        store, "SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 1", r=view.run_id
    )
    assert rows[0][0] == bank_tx.BALANCE + 25
    events = await dp.Client(store).events(view.run_id)
    done = [
        e for e in events if e["kind"] == "transaction_committed" and e["name"] == "async_deposit"
    ]
    assert len(done) == 1
    # Replayed against its history, it returns the recorded result without running the body.
    replayed = await replay_run(store, view.run_id, async_deposit_pipeline)
    assert replayed.completed and replayed.output == 25 and len(CONNECTIONS) == 1


@body_kind
async def test_replay_returns_the_recorded_result_without_running_the_body(
    store: Any, kind: str
) -> None:
    name = TRANSFER[kind].__name__
    view = await crash_run(store, BANKS[kind], transfers=3, after=f"transaction_committed:{name}")
    resumed = await resume_run(store, BANKS[kind], view.run_id)
    assert resumed.status == "completed"
    await check_bank(store, view.run_id, 3)  # transfer 0 replayed, not applied again


@dp.step
async def slow_note() -> str:
    await asyncio.sleep(0.3)
    return "noted"


@dp.pipeline(name="tx_beside_a_step", version="1")
async def tx_beside_a_step(kind: str = "sync") -> list[Any]:
    await bank_tx.open_accounts()
    # The step's start is posted (not written at once) while the transaction in the other
    # branch commits; however the two interleave, a crash right after that commit must leave
    # the history contiguous (posted events with lower seqs go in with the transaction).
    return list(await dp.gather(slow_note(), TRANSFER[kind](*bank_tx.plan(1)[0])))


@body_kind
async def test_a_crash_after_a_transaction_beside_a_step_leaves_a_contiguous_history(
    store: Any, kind: str
) -> None:
    name = TRANSFER[kind].__name__
    view = await crash_run(
        store, tx_beside_a_step, kind=kind, after=f"transaction_committed:{name}"
    )
    events = await dp.Client(store).events(view.run_id)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert "step_started" in [e["kind"] for e in events]
    resumed = await resume_run(store, tx_beside_a_step, view.run_id)
    assert resumed.status == "completed" and resumed.output == ["noted", 0]
    seqs = [e["seq"] for e in await dp.Client(store).events(view.run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    await check_bank(store, view.run_id, 1)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database: for the tests of SQLite's own file lock (no PostgreSQL
    variant to skip)."""
    from conftest import _migrate

    url = f"sqlite:///{tmp_path / 'durapipe.db'}"
    _migrate(url)
    return url


@pytest_asyncio.fixture
async def sqlite_store(sqlite_url: str) -> Any:
    store = await dp.open_store(sqlite_url)
    try:
        yield store
    finally:
        await store.close()


@body_kind
async def test_sqlite_write_lock_is_taken_before_the_body_runs(
    sqlite_store: Any, kind: str
) -> None:
    """BEGIN IMMEDIATE: the body's first statement never waits for the lock, and a read-then-
    write body cannot be refused for a lock upgrade (SQLITE_BUSY) halfway through."""
    store = sqlite_store
    path = store.url.path
    seen: list[str] = []

    def try_lock() -> None:  # another connection, not waiting: is the write lock free?
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            seen.append("free")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            other.close()

    def body(conn: Connection) -> str:
        try_lock()
        return '{"result":1}'

    async def abody(conn: AsyncConnection) -> str:
        try_lock()
        return '{"result":1}'

    view = await run_pipeline(store, bank_tx.bank, transfers=0)
    row = await dp.Client(store).row(view.run_id)
    event = {**_EVENT, "run_id": view.run_id, "attempt": row.attempt}
    with pytest.raises(LeaseLost):  # the run is ended: nothing commits, after the body ran
        await store.run_transaction(
            run_id=view.run_id,
            owner="someone-else",
            attempt=row.attempt,
            event=event,
            body=abody if kind == "async" else body,
            is_async=kind == "async",
            label="transfer_9",
        )
    assert seen == ["database is locked"]


def _hold_write_lock(path: str, held: threading.Event, seconds: float) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


@dp.pipeline(name="deposit_behind_a_lock", version="1")
async def deposit_behind_a_lock(path: str) -> int:
    await bank_tx.open_accounts()
    # Another process's write transaction, longer than the busy timeout: the async
    # transaction's BEGIN IMMEDIATE gives up, and is tried again until the lock is free.
    held = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, held, 0.6))
    holder.start()
    held.wait(10)
    try:
        return await async_deposit(25)
    finally:
        await asyncio.to_thread(holder.join)


async def test_an_async_transaction_waits_for_another_process_s_lock_on_sqlite(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db_url = sqlite_url
    monkeypatch.setenv("DURAPIPE_DB_TIMEOUT", "0.1")
    store = await dp.open_store(db_url)
    try:
        CONNECTIONS.clear()
        view = await run_pipeline(store, deposit_behind_a_lock, path=store.url.path)
        assert view.status == "completed", view.error
        assert view.output == 25 and len(CONNECTIONS) >= 1
        assert "locked by another process" in caplog.text  # it waited, saying so once
        rows = await _rows(
            store, "SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 1", r=view.run_id
        )
        assert rows[0][0] == bank_tx.BALANCE + 25
    finally:
        await store.close()


@dp.pipeline(name="transfers_at_once", version="1")
async def transfers_at_once(transfers: int) -> list[Any]:
    await bank_tx.open_accounts()
    # Plain and async transactions of one run side by side: on SQLite each waits for the write
    # lock (the writer thread, aiosqlite's connections), on PostgreSQL for the rows' locks.
    calls = [
        (bank_tx.transfer_async if n % 2 else bank_tx.transfer)(n, src, dst, amount)
        for n, src, dst, amount in bank_tx.plan(transfers)
    ]
    return list(await dp.gather(*calls))


async def test_plain_and_async_transactions_side_by_side_each_commit_once(store: Any) -> None:
    view = await run_pipeline(store, transfers_at_once, transfers=TRANSFERS)
    assert view.status == "completed", view.error
    assert view.output == list(range(TRANSFERS))
    await check_bank(store, view.run_id, TRANSFERS)
    seqs = [e["seq"] for e in await dp.Client(store).events(view.run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
