"""The step hot path (issue #22): a run stepping alone commits its write from its own task
(PostgreSQL) or in place (SQLite), and that shortcut keeps the journal's promises. Both databases."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe._definition import load_target
from durapipe._store.store import Op

pytestmark = pytest.mark.asyncio

WORK = str(PIPELINES / "work.py")


def _event(rid: str, seq: int, kind: str) -> dict[str, Any]:
    return {
        "run_id": rid,
        "seq": seq,
        "kind": kind,
        "step": "1",
        "name": "trivial",
        "label": "trivial_1",
        "at": time.time(),
        "attempt": 1,
        "data": '{"result":1}' if kind == "step_completed" else None,
    }


class _Holder:
    """Another session holding the run's row (PostgreSQL) or the write lock (SQLite)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.conn: Any = None

    async def hold(self, rid: str) -> None:
        if self.store.is_sqlite:
            self.conn = sqlite3.connect(self.store.url.path, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import asyncpg

            self.conn = await asyncpg.connect(self.store.plain_pg_dsn())
            await self.conn.execute("BEGIN")
            await self.conn.execute("SELECT 1 FROM durapipe_runs WHERE id = $1 FOR UPDATE", rid)

    async def waiters(self) -> int:
        assert not self.store.is_sqlite
        n = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(n)

    async def release(self) -> None:
        if self.store.is_sqlite:
            self.conn.execute("ROLLBACK")
            self.conn.close()
        else:
            await self.conn.execute("ROLLBACK")
            await self.conn.close()


async def _cancel_step_write(store: Any, holder: _Holder, rid: str, attempt: int) -> None:
    """Submit a step's write (seqs 2 and 3) while ``holder`` keeps it waiting in the database,
    and cancel its caller there."""
    op = Op(
        run_id=rid,
        owner="wkr_a",
        attempt=attempt,
        events=[_event(rid, 2, "step_started"), _event(rid, 3, "step_completed")],
    )
    writer = asyncio.ensure_future(store.journal.submit(op))
    deadline = time.monotonic() + 20
    if store.is_sqlite:  # the write waits for the lock (in the writer thread)
        while store.journal.batches == 0 and not writer.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    else:  # the fenced insert waits for the run's row, inside the server
        while await holder.waiters() < 1:
            assert time.monotonic() < deadline, "the write never reached the server"
            await asyncio.sleep(0.02)
    assert not writer.done()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    # The driver asks the server to cancel the statement: give the request time to land, so
    # that the write is undone in the database more often than not (either way, the journal
    # must end with it stored once).
    await asyncio.sleep(0.5)


async def _seqs(store: Any, rid: str) -> list[tuple[int, str]]:
    return [(e.seq, e.kind) for e in await store.events(rid)]


async def test_a_step_write_cancelled_while_it_commits_is_stored_once(store: Any) -> None:
    """The caller of a step's write is cancelled (a sibling branch failed, the worker stops) while
    its statement waits in the database. The write is neither lost halfway nor stored twice: the
    journal finds out what happened and finishes it, and the run's next write follows it."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    row, _ = await client.create_run(pdef, {}, owner="wkr_a", ttl=30)
    rid = row.id
    assert await _seqs(store, rid) == [(1, "run_started")]
    holder = _Holder(store)
    await holder.hold(rid)
    try:
        await _cancel_step_write(store, holder, rid, row.attempt)
    finally:
        await holder.release()
    want = [(1, "run_started"), (2, "step_started"), (3, "step_completed")]
    deadline = time.monotonic() + 20
    while await _seqs(store, rid) != want:
        assert time.monotonic() < deadline, await _seqs(store, rid)
        await asyncio.sleep(0.05)
    # The run goes on from there: its next write is the next seq, exactly once.
    await store.journal.submit(
        Op(run_id=rid, owner="wkr_a", attempt=row.attempt, events=[_event(rid, 4, "step_started")])
    )
    assert await _seqs(store, rid) == [*want, (4, "step_started")]


async def test_a_write_after_the_lease_moved_on_is_refused_on_the_hot_path(store: Any) -> None:
    """The one-statement fence: a worker whose lease another took over appends nothing, and is
    told so (LeaseLost), on the path a run stepping alone takes."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    row, _ = await client.create_run(pdef, {}, owner="wkr_a", ttl=0.01)
    rid = row.id
    taken = await store.claim_run(
        rid, owner="wkr_b", ttl=30, now=time.time() + 1, statuses=("running",)
    )
    assert taken is not None and taken.attempt == row.attempt + 1
    with pytest.raises(dp.errors.LeaseLost):
        await store.journal.submit(
            Op(
                run_id=rid,
                owner="wkr_a",
                attempt=row.attempt,
                events=[_event(rid, 2, "step_started"), _event(rid, 3, "step_completed")],
            )
        )
    assert await _seqs(store, rid) == [(1, "run_started")]


async def test_a_quick_step_is_one_row_read_back_as_its_start_and_completion(store: Any) -> None:
    """A step's start and completion written together are stored as one row (the completion,
    with the start's time); every reader gives back both events, with their seqs, as before.
    Events written one by one (a start sent alone, a step that failed) stay rows of their own."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    row, _ = await client.create_run(pdef, {}, owner="wkr_a", ttl=30)
    rid = row.id
    started = _event(rid, 2, "step_started")
    completed = {**_event(rid, 3, "step_completed"), "at": started["at"] + 0.5}
    lone = {**_event(rid, 4, "step_started"), "step": "2", "label": "trivial_2"}
    await store.journal.submit(
        Op(run_id=rid, owner="wkr_a", attempt=row.attempt, events=[started, completed])
    )
    await store.journal.submit(Op(run_id=rid, owner="wkr_a", attempt=row.attempt, events=[lone]))
    stored = await store.run_read(
        lambda c: c.exec_driver_sql(
            f"SELECT seq, kind, started_at FROM durapipe_events WHERE run_id = '{rid}' ORDER BY seq"
        ).all()
    )
    assert [(r[0], r[1], r[2]) for r in stored] == [
        (1, "run_started", None),
        (3, "step_completed", started["at"]),
        (4, "step_started", None),
    ]
    want = [
        (1, "run_started", None, None),
        (2, "step_started", "1", started["at"]),
        (3, "step_completed", "1", completed["at"]),
        (4, "step_started", "2", lone["at"]),
    ]
    got = [(e.seq, e.kind, e.step, e.at) for e in await store.events(rid)]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got[1:]] == [w[3] for w in want[1:]]
    # The shapes other readers see: the client's JSON, the claim's prefetched history and the
    # timeline of working time.
    shown = await client.events(rid)
    assert [(e["seq"], e["kind"], e.get("data")) for e in shown] == [
        (1, "run_started", shown[0].get("data")),
        (2, "step_started", None),
        (3, "step_completed", {"result": 1}),
        (4, "step_started", None),
    ]
    marks = (await store.timelines([rid]))[rid]
    assert [(m.kind, m.step) for m in marks if m.kind.startswith("step")] == [
        ("step_started", "1"),
        ("step_completed", "1"),
        ("step_started", "2"),
    ]


async def test_the_next_write_waits_for_a_cancelled_one_to_settle(store: Any) -> None:
    """After a write was cancelled mid-commit, the run's next write (here one that ends the run
    and gives its lease up) goes after it, never before: else the cancelled write, committed
    again later, would find the lease gone and the history would keep a gap."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    row, _ = await client.create_run(pdef, {}, owner="wkr_a", ttl=30)
    rid = row.id
    holder = _Holder(store)
    await holder.hold(rid)
    try:
        await _cancel_step_write(store, holder, rid, row.attempt)
        end = Op(
            run_id=rid,
            owner="wkr_a",
            attempt=row.attempt,
            events=[{**_event(rid, 4, "run_completed"), "step": None, "name": None, "label": None}],
            run_update={"status": "completed", "lease_owner": None, "lease_expires_at": None},
        )
        ender = asyncio.ensure_future(store.journal.submit(end))
        await asyncio.sleep(0.3)
    finally:
        await holder.release()
    await asyncio.wait_for(ender, 20)
    assert [s for s, _ in await _seqs(store, rid)] == [1, 2, 3, 4]
