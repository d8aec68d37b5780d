"""@dp.transaction: a step's statements and its completion commit together, exactly once.

Money moves between rows of the durapipe database (tests/pipelines/bank_tx.py). A crash at a
random history write (the testing kit's crash points, before or after it) and a resume leave
the total conserved and every transfer applied once; a worker that lost its lease commits
nothing; a body that raises rolls back; PostgreSQL's serialization failures are retried.
Real SIGKILLs of `durapipe run` are in tests/acceptance/test_transaction_kill.py.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

import durapipe as dp
from durapipe.errors import LeaseLost
from durapipe.testing import crash_run, record_commits, resume_run, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import bank_tx  # noqa: E402

pytestmark = pytest.mark.asyncio

TRIALS = 47  # crash points per database (+ 3 real SIGKILLs: the acceptance test)
TRANSFERS = 6


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


async def test_transfers_are_applied_once_across_crashes(store: Any) -> None:
    view, commits = await record_commits(store, bank_tx.bank, transfers=TRANSFERS)
    assert view.status == "completed", view.error
    await check_bank(store, view.run_id, TRANSFERS)
    kinds = [e["kind"] for write in commits for e in write]
    assert kinds.count("transaction_committed") == TRANSFERS + 1  # each its own write
    rng = random.Random(17)
    for _ in range(TRIALS):
        k = rng.randint(1, len(commits) - 1)  # the last write is the run's end: nothing after
        where = {"before": k} if rng.random() < 0.5 else {"after": k}
        crashed = await crash_run(store, bank_tx.bank, transfers=TRANSFERS, **where)
        assert crashed.status == "running", (where, crashed.status)
        resumed = await resume_run(store, bank_tx.bank, crashed.run_id)
        assert resumed.status == "completed", (where, resumed.error)
        assert resumed.output == TRANSFERS
        await check_bank(store, crashed.run_id, TRANSFERS)
        seqs = [e["seq"] for e in await dp.Client(store).events(crashed.run_id)]
        assert seqs == list(range(1, len(seqs) + 1)), (where, seqs)


async def test_a_lost_lease_commits_nothing(store: Any) -> None:
    view = await run_pipeline(store, bank_tx.bank, transfers=1)
    run_id = view.run_id
    row = await dp.Client(store).row(run_id)
    event = {
        "run_id": run_id,
        "seq": 999,
        "kind": "transaction_committed",
        "step": "9",
        "name": "transfer",
        "label": "transfer_9",
        "at": 0.0,
        "attempt": row.attempt,
        "data": None,
    }
    move = "UPDATE bank_accounts SET balance = balance + 500 WHERE run_id = :r AND id = 0"

    def body(conn: Connection) -> str:
        conn.execute(text(move), {"r": run_id})
        return '{"result":1}'

    with pytest.raises(LeaseLost):  # the run is not leased to "someone-else" (it is ended)
        await store.run_transaction(
            run_id=run_id,
            owner="someone-else",
            attempt=row.attempt,
            event=event,
            body=body,
            is_async=False,
            label="transfer_9",
        )
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


@dp.pipeline(name="overdraw", version="1")
async def overdraw_pipeline(amount: int) -> int:
    await bank_tx.open_accounts()
    return await overdraw(amount)


async def test_a_failing_body_rolls_back_and_fails_the_step(store: Any) -> None:
    view = await run_pipeline(store, overdraw_pipeline, amount=5000)
    assert view.status == "failed"
    assert view.error is not None and "would be overdrawn" in view.error["message"]
    rows = await _rows(
        store, "SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 0", r=view.run_id
    )
    assert rows[0][0] == bank_tx.BALANCE  # the update was rolled back
    kinds = [e["kind"] for e in await dp.Client(store).events(view.run_id)]
    assert "transaction_failed" in kinds
    ok = await run_pipeline(store, overdraw_pipeline, amount=300)
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


@dp.pipeline(name="conflicted", version="1")
async def conflicted_pipeline() -> int:
    return await conflicted()


async def test_conflicts_run_the_transaction_again(store: Any) -> None:
    ATTEMPTS.clear()
    view = await run_pipeline(store, conflicted_pipeline)
    assert view.status == "completed", view.error
    tries = 3 if not store.is_sqlite else 1  # SQLite serialises writers: no conflicts
    assert view.output == tries and len(ATTEMPTS) == tries
    # Only the attempt that committed left its row.
    assert [r[0] for r in await _rows(store, "SELECT n FROM tx_marks")] == [tries]


@dp.transaction
async def async_deposit(conn: Any, amount: int) -> int:
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


async def test_async_def_gets_an_async_connection_on_postgresql_only(store: Any) -> None:
    view = await run_pipeline(store, async_deposit_pipeline)
    if store.is_sqlite:
        assert view.status == "failed"
        msg = view.error["message"]
        assert "async def" in msg and "make it a plain `def`" in msg and "\n" not in msg
        return
    assert view.status == "completed", view.error
    rows = await _rows(
        store, "SELECT balance FROM bank_accounts WHERE run_id = :r AND id = 1", r=view.run_id
    )
    assert rows[0][0] == bank_tx.BALANCE + 25


async def test_replay_returns_the_recorded_result_without_running_the_body(store: Any) -> None:
    view = await crash_run(store, bank_tx.bank, transfers=3, after="transaction_committed:transfer")
    resumed = await resume_run(store, bank_tx.bank, view.run_id)
    assert resumed.status == "completed"
    await check_bank(store, view.run_id, 3)  # transfer 0 replayed, not applied again


@dp.step
async def slow_note() -> str:
    await asyncio.sleep(0.3)
    return "noted"


@dp.pipeline(name="tx_beside_a_step", version="1")
async def tx_beside_a_step() -> list[Any]:
    await bank_tx.open_accounts()
    # The step's start is posted (not written at once) while the transaction in the other
    # branch commits; however the two interleave, a crash right after that commit must leave
    # the history contiguous (posted events with lower seqs go in with the transaction).
    return list(await dp.gather(slow_note(), bank_tx.transfer(*bank_tx.plan(1)[0])))


async def test_a_crash_after_a_transaction_beside_a_step_leaves_a_contiguous_history(
    store: Any,
) -> None:
    view = await crash_run(store, tx_beside_a_step, after="transaction_committed:transfer")
    events = await dp.Client(store).events(view.run_id)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert "step_started" in [e["kind"] for e in events]
    resumed = await resume_run(store, tx_beside_a_step, view.run_id)
    assert resumed.status == "completed" and resumed.output == ["noted", 0]
    seqs = [e["seq"] for e in await dp.Client(store).events(view.run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    await check_bank(store, view.run_id, 1)
