"""Fencing of every write to a run's history (issue #14): a client's stop racing a worker's claim,
and log rows of a fenced-off attempt. Both databases."""

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


class _Claimer:
    """A worker's claim and its first append, in one transaction left open on a connection of its
    own: the run's row and its next event are taken but not yet committed."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.conn: Any = None

    async def take(self, run_ids: list[str], owner: str) -> None:
        now = time.time()
        claim = (
            "UPDATE durapipe_runs SET lease_owner = {}, lease_expires_at = {}, "
            "attempt = attempt + 1, status = 'running' WHERE id = {}"
        )
        append = (
            "INSERT INTO durapipe_events (run_id, seq, kind, at, attempt) "
            "SELECT id, 2, 'run_resumed', {}, attempt FROM durapipe_runs WHERE id = {}"
        )
        if self.store.is_sqlite:
            self.conn = sqlite3.connect(self.store.url.path, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
            for rid in run_ids:
                self.conn.execute(claim.format("?", "?", "?"), (owner, now + 30, rid))
                self.conn.execute(append.format("?", "?"), (now, rid))
        else:
            import asyncpg

            self.conn = await asyncpg.connect(self.store.plain_pg_dsn())
            await self.conn.execute("BEGIN")
            for rid in run_ids:
                await self.conn.execute(claim.format("$1", "$2", "$3"), owner, now + 30, rid)
                await self.conn.execute(append.format("$1", "$2"), now, rid)

    async def commit(self) -> None:
        if self.store.is_sqlite:
            self.conn.execute("COMMIT")
            self.conn.close()
        else:
            await self.conn.execute("COMMIT")
            await self.conn.close()

    async def waiting(self) -> int:
        """PostgreSQL: how many other sessions of this database wait for a lock."""
        rows = await self.store.run_read(
            lambda c: c.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).scalar_one()
        )
        return int(rows)


async def test_stops_racing_a_claim_that_holds_the_rows_wait_and_are_requested(
    store: Any,
) -> None:
    """Many `stop`s of unleased runs while a worker has claimed them and is appending their next
    event (not committed yet). Each stop must wait for the run's row and then see the lease: the
    worker is asked to stop. The old stop read "unleased", computed the same next seq and died on
    a raw IntegrityError (duplicate (run_id, seq))."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    ids = [await client.start(pdef) for _ in range(20)]
    claimer = _Claimer(store)
    await claimer.take(ids, "wkr_race")
    stops = [asyncio.ensure_future(client.stop(rid)) for rid in ids]
    try:
        if not store.is_sqlite:  # every stop is inside its transaction, waiting for the claimer
            deadline = time.monotonic() + 20
            while await claimer.waiting() < len(ids):
                assert time.monotonic() < deadline, "the stops never waited for the claimer"
                await asyncio.sleep(0.05)
        else:  # one writer at a time: the stops queue behind the claimer's write lock
            await asyncio.sleep(0.3)
    finally:
        await claimer.commit()
    outcomes = await asyncio.gather(*stops, return_exceptions=True)
    assert outcomes == ["requested"] * len(ids), outcomes
    for rid in ids:
        row = await store.get_run(rid)
        assert (row.lease_owner, row.status, row.requested) == ("wkr_race", "running", "stop")
        assert [e.seq for e in await store.events(rid)] == [1, 2]


def _log(run_id: str, attempt: int, line: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "root_run_id": run_id,
        "step": "1",
        "prefix": "five.exec_1",
        "stream": "out",
        "at": time.time(),
        "line": line,
        "attempt": attempt,
    }


async def test_log_lines_of_a_superseded_attempt_are_not_stored(store: Any) -> None:
    """Log rows ride the journal's batches fenced by their run's attempt: once another worker
    took the run over (attempt 2), lines the first attempt still sends are dropped, alone or
    riding along with the new holder's own history write."""
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    row, _ = await client.create_run(pdef, {}, owner="wkr_a", ttl=0.01)
    rid = row.id
    await store.write_logs([_log(rid, 1, "a: before")])
    taken = await store.claim_run(
        rid, owner="wkr_b", ttl=30, now=time.time() + 1, statuses=("running",)
    )
    assert taken is not None and taken.attempt == 2
    await store.write_logs([_log(rid, 1, "a: late"), _log(rid, 2, "b: own")])
    # The same, riding along with an op of the new holder (the batch path of a step's write).
    store.journal.take_logs = lambda: [_log(rid, 1, "a: later"), _log(rid, 2, "b: step")]
    try:
        event = {
            "run_id": rid,
            "seq": 2,
            "kind": "run_resumed",
            "step": None,
            "name": None,
            "label": None,
            "at": time.time(),
            "attempt": 2,
            "data": None,
        }
        await store.journal.submit(Op(run_id=rid, owner="wkr_b", attempt=2, events=[event]))
    finally:
        store.journal.take_logs = None
    lines = [(x.attempt, x.line) for x in await store.read_logs(rid)]
    assert lines == [(1, "a: before"), (2, "b: own"), (2, "b: step")]
