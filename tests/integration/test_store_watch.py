"""Store.watch: wake-ups behind the store's interface (issue #15), on SQLite and PostgreSQL.

A commit from another process or connection reaches ``watch`` within a deadline, with the payload
saying what changed (PostgreSQL; SQLite's data_version only says "something"), and on PostgreSQL
the watch listens again after the server killed its connection.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from conftest import ROOT

import durapipe as dp
from durapipe._store import open_store, postgres
from tests.pipelines import work

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0


class Watching:
    """``store.watch`` running as a task: what it heard, and how often it (re)started listening."""

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.listening = 0
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def on_change(self, payload: str) -> None:
        self.heard.append(payload)

    def on_listening(self) -> None:
        self.listening += 1

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        end = time.monotonic() + DEADLINE
        while not cond():
            assert self.task is not None and not self.task.done(), "the watch ended by itself"
            if time.monotonic() > end:
                raise AssertionError(f"{what}: not within {DEADLINE:g}s (heard {self.heard})")
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def watching(store: Any) -> AsyncIterator[Watching]:
    w = Watching()
    w.task = asyncio.ensure_future(
        store.watch(w.on_change, on_listening=w.on_listening, until=w.stop)
    )
    await w.until(lambda: w.listening >= 1, "the watch listening")
    try:
        yield w
    finally:
        w.stop.set()
        await asyncio.wait_for(w.task, 15)  # ends by itself once ``until`` is set


def _send_input_elsewhere(db_url: str, run_id: str) -> None:
    """Another process sends an input to ``run_id`` (its own connections, its own commit)."""
    code = (
        "import asyncio, sys, time\n"
        "from durapipe._store import open_store\n"
        "async def main():\n"
        "    s = await open_store(sys.argv[1])\n"
        "    try:\n"
        "        await s.send_input(sys.argv[2], 'go', '1', now=time.time())\n"
        "    finally:\n"
        "        await s.close()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, db_url, run_id], check=True, env=env, timeout=30)


async def test_a_commit_in_another_process_wakes_the_watch(
    store: Any, db_url: str, watching: Watching
) -> None:
    await asyncio.to_thread(_send_input_elsewhere, db_url, "run_elsewhere")
    want = "run" if store.is_sqlite else "input:run_elsewhere"
    await watching.until(lambda: want in watching.heard, f"{want!r} heard")


async def test_each_change_says_what_changed(store: Any, db_url: str, watching: Watching) -> None:
    """Another connection's writes: a new run, an input for it, a stop asked of it."""
    other = await open_store(db_url)
    try:
        run_id = await dp.Client(other).start(work.five, n=1)
        await watching.until(lambda: "run" in watching.heard, "a new run")
        if store.is_sqlite:  # data_version says only that something was committed
            before = len(watching.heard)
            await other.send_input(run_id, "go", "1", now=time.time())
            await watching.until(lambda: len(watching.heard) > before, "the input's commit")
            return
        await other.send_input(run_id, "go", "1", now=time.time())
        await watching.until(lambda: f"input:{run_id}" in watching.heard, "the input")
        await other.set_request(run_id, "stop", now=time.time())
        await watching.until(lambda: "control" in watching.heard, "the stop request")
    finally:
        await other.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite's watch reads a file
async def test_the_watch_listens_again_after_its_connection_is_killed(
    store: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "LISTEN_PING", 0.2)  # notice the dead connection sooner
    w = Watching()
    w.task = asyncio.ensure_future(
        store.watch(w.on_change, on_listening=w.on_listening, until=w.stop)
    )
    try:
        await w.until(lambda: w.listening >= 1, "the watch listening")
        import asyncpg

        admin = await asyncpg.connect(store.plain_pg_dsn())
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        await w.until(lambda: w.listening >= 2, "listening again after the kill")
        await asyncio.to_thread(_send_input_elsewhere, db_url, "run_after_kill")
        await w.until(lambda: "input:run_after_kill" in w.heard, "a NOTIFY after the reconnect")
    finally:
        w.stop.set()
        await asyncio.wait_for(w.task, 15)


async def test_a_cancelled_watch_ends(store: Any) -> None:
    """Without ``until``, the watch runs until its task is cancelled."""
    ready = asyncio.Event()
    task = asyncio.ensure_future(store.watch(lambda _p: None, on_listening=ready.set))
    await asyncio.wait_for(ready.wait(), DEADLINE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)


async def test_create_and_drop_a_database(pg_server: str | None) -> None:
    """The testing kit's databases on a PostgreSQL server: created, usable, dropped."""
    if pg_server is None:
        pytest.skip("no PostgreSQL server available")
    import uuid

    name = "dp_admin_" + uuid.uuid4().hex[:12]
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    await postgres.create_database(pg_server, name)
    try:
        s = await open_store(url, migrate=True)
        assert await s.schema_revision() is not None
        await s.close()
    finally:
        await postgres.drop_database(pg_server, name)
    await postgres.drop_database(pg_server, name)  # IF EXISTS: a second drop is no error
    with pytest.raises(dp.ConfigError, match="does not exist"):
        await open_store(url)
