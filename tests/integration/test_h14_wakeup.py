"""No lost wake-ups around suspension (issue #14, "nothing lost"), on SQLite and PostgreSQL.

A worker holding a run in a short in-memory wait (``dp.await_input``, ``dp.sleep``) decides to
suspend it and writes the suspension: status waiting/sleeping, the lease released. An input or a
stop/cancel that lands between that decision and that commit must not be lost.

The window is made exact rather than hoped for: the worker's journal is wrapped so that the
suspending write is held between "decided to suspend" and "written" until the test lets it go
(the write itself is the real one, on the real database). On PostgreSQL the input's own
transaction is also held at its COMMIT, by a deferred trigger waiting on an advisory lock the
test holds, so the two transactions overlap as they did in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import durapipe as dp
from durapipe._runner import Runner
from durapipe._store.store import Op
from tests.pipelines import h14_wakeup

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0  # seconds for a run to reach its end once the window closed (it takes < 1 s)


def _suspends(op: Op) -> bool:
    """The write that suspends a run: it parks it (waiting/sleeping) and gives up its lease."""
    update = op.run_update or {}
    return (
        update.get("status") in ("waiting", "sleeping")
        and "lease_owner" in update
        and update["lease_owner"] is None
    )


class _HeldSuspension:
    """The worker's journal, holding the first suspending write until ``go`` is set.

    The held write is on its way to the database, as in the real journal: it is written once
    released even if the run's task is cancelled meanwhile.
    """

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self.reached = asyncio.Event()  # the worker decided to suspend the run
        self.go = asyncio.Event()  # the test lets the suspension be written
        self.done = asyncio.Event()  # the suspension's write returned (committed or refused)
        self._armed = True
        self._task: asyncio.Future[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    async def submit(self, op: Op) -> None:
        if not (self._armed and _suspends(op)):
            await self._journal.submit(op)
            return
        self._armed = False
        self.reached.set()

        async def later() -> None:
            try:
                await self.go.wait()
                await self._journal.submit(op)
            finally:
                self.done.set()

        self._task = asyncio.ensure_future(later())
        await asyncio.shield(self._task)


@contextlib.asynccontextmanager
async def _worker(store: Any) -> AsyncIterator[tuple[Runner, _HeldSuspension]]:
    """A worker in this process carrying the test pipelines, suspending any wait at once."""
    runner = Runner(
        store,
        pipelines=[h14_wakeup.wake_ask, h14_wakeup.wake_nap],
        suspend_after=0.2,
        poll_interval=0.1,
    )
    await runner.start()
    gate = _HeldSuspension(runner.journal)
    runner.journal = gate  # type: ignore[assignment]  # the runs it executes write through it
    serve = asyncio.ensure_future(runner.serve(runner.claim_filter()))
    try:
        yield runner, gate
    finally:
        gate.go.set()
        runner._stopping = True
        runner._wake.set()
        await asyncio.wait_for(serve, 10)
        await runner.shutdown(grace=1)
        await runner.close()


async def _until(client: dp.Client, run_id: str, statuses: tuple[str, ...]) -> dp.RunView:
    """Wait for the run to reach one of ``statuses``; fail with where it is after the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while True:
        view = await client.get(run_id)
        if view.status in statuses:
            return view
        if loop.time() > end:
            raise AssertionError(
                f"run {run_id} is still {view.status} (lease {view.lease_owner}) "
                f"{DEADLINE:g}s after the window closed; expected {' or '.join(statuses)}"
            )
        await asyncio.sleep(0.05)


async def _reached(gate: _HeldSuspension) -> None:
    await asyncio.wait_for(gate.reached.wait(), DEADLINE)


@pytest.mark.parametrize("pipeline", ["wake_nap", "wake_ask"])
async def test_a_stop_asked_while_the_worker_suspends_the_run_stops_it(
    store: Any, pipeline: str
) -> None:
    """The stop is recorded while the worker still holds the run (so the client says
    "requested"), and the suspension is written after it. The old suspension parked the run with
    the request on it and nothing acted on it: a sleeping run slept its hour, a waiting run
    waited for ever."""
    client = dp.Client(store)
    async with _worker(store) as (_runner, gate):
        run_id = await client.start(getattr(h14_wakeup, pipeline))
        await _reached(gate)
        assert await client.stop(run_id) == "requested"
        gate.go.set()
        view = await _until(client, run_id, ("stopped",))
    assert view.lease_owner is None
    kinds = [e["kind"] for e in await client.events(run_id)]
    assert kinds[-1] == "run_stopped", kinds


@pytest.mark.parametrize("request_", ["stop", "cancel"])
async def test_a_request_that_lands_just_after_the_suspension_is_acted_on(
    store: Any, request_: str
) -> None:
    """The client reads the run as held (so it only records the request for the holder), and
    the suspension commits before the request is recorded: the request lands on a parked,
    unleased run. The old request stayed on the row until the run's timer came (an hour); now
    recording it makes the run due, and a worker takes it and acts on it."""
    committed = asyncio.Event()
    read = asyncio.Event()

    class _LateRequest:
        """The client's store: ``set_request`` runs once the suspension is written (and the
        client's read of the run is seen to happen before it, while the worker holds it)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def get_run(self, run_id: str) -> Any:
            row = await store.get_run(run_id)
            read.set()
            return row

        async def set_request(self, *args: Any, **kw: Any) -> None:
            await asyncio.wait_for(committed.wait(), DEADLINE)
            await store.set_request(*args, **kw)

    client = dp.Client(store)
    client.store = _LateRequest()  # type: ignore[assignment]
    async with _worker(store) as (_runner, gate):
        run_id = await client.start(h14_wakeup.wake_nap)
        await _reached(gate)
        if request_ == "stop":
            asked = asyncio.ensure_future(client.stop(run_id))
        else:
            asked = asyncio.ensure_future(client.cancel(run_id, here=False))
        await asyncio.wait_for(read.wait(), DEADLINE)  # it read the run as held
        gate.go.set()
        await asyncio.wait_for(gate.done.wait(), DEADLINE)
        parked = await client.get(run_id)
        assert parked.status == "sleeping" and parked.lease_owner is None  # the window was hit
        committed.set()
        assert await asyncio.wait_for(asked, DEADLINE) == "requested"
        end = "stopped" if request_ == "stop" else "cancelled"
        view = await _until(client, run_id, (end,))
    assert view.lease_owner is None


class _HeldCommit:
    """PostgreSQL: an input's transaction held at its COMMIT (a deferred trigger on
    durapipe_inputs waits for an advisory lock this test holds), to be let go later."""

    KEY = 14_014

    def __init__(self, store: Any) -> None:
        self.store = store
        self.conn: Any = None

    async def arm(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.store.plain_pg_dsn())
        await self.conn.execute(
            f"""
            CREATE FUNCTION h14_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared({self.KEY}); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER h14_hold_commit AFTER INSERT ON durapipe_inputs
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION h14_hold_commit();
            SELECT pg_advisory_lock({self.KEY});
            """
        )

    async def sessions_waiting(self, *events: str) -> int:
        """How many sessions of this database wait for a lock of these kinds."""
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = ANY($1::text[])",
                list(events),
            )
        )

    async def release(self) -> None:
        await self.conn.execute(f"SELECT pg_advisory_unlock({self.KEY})")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.execute(
                "DROP TRIGGER IF EXISTS h14_hold_commit ON durapipe_inputs; "
                "DROP FUNCTION IF EXISTS h14_hold_commit()"
            )
        await self.conn.close()


async def _eventually(what: str, cond: Any) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {DEADLINE:g}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_an_input_sent_while_the_worker_suspends_the_run_wakes_it(store: Any) -> None:
    """The input arrives while the suspension is being written. On PostgreSQL the two
    transactions overlap: the input's is held at its COMMIT while the suspension is let go. The
    old input transaction found the run still leased (so woke nothing) and the old suspension
    could not see the uncommitted input (so parked the run for good): it stayed waiting with
    its input unread. Now one of them waits for the other on the run's row and the run is
    woken. On SQLite write transactions never overlap; the same sequence checks that the
    suspension sees the input committed just before it."""
    client = dp.Client(store)
    held = None if store.is_sqlite else _HeldCommit(store)
    if held is not None:
        await held.arm()
    try:
        async with _worker(store) as (_runner, gate):
            run_id = await client.start(h14_wakeup.wake_ask, tag="t")
            await _reached(gate)
            sent = asyncio.ensure_future(client.send_input(run_id, "go", 42))
            if held is not None:
                # The input's transaction has written everything and waits at its COMMIT.
                await _eventually(
                    "the input at its commit", lambda: held.sessions_waiting("advisory")
                )
                gate.go.set()

                async def suspension_written_or_waiting() -> bool:
                    return gate.done.is_set() or bool(
                        await held.sessions_waiting("transactionid", "tuple")
                    )

                await _eventually(
                    "the suspension to be written or to wait for the row",
                    suspension_written_or_waiting,
                )
                await held.release()
            else:
                await asyncio.wait_for(sent, DEADLINE)
                gate.go.set()
            await asyncio.wait_for(sent, DEADLINE)
            await asyncio.wait_for(gate.done.wait(), DEADLINE)
            view = await _until(client, run_id, ("completed",))
    finally:
        if held is not None:
            await held.close()
    assert view.output == {"tag": "t", "got": 42}
