"""The store's one error classifier (issue #15) on the drivers' real errors, both databases:
by SQLSTATE on PostgreSQL and by SQLite's result code, never by a type's name or a message."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from typing import Any

import pytest

from durapipe._store.errors import Fault, classify, is_retryable, is_statement_error

pytestmark = pytest.mark.asyncio


async def _raw(store: Any) -> Any:
    """A connection of the test's own on the driver the store uses."""
    if store.is_sqlite:
        return sqlite3.connect(store.url.path, isolation_level=None, timeout=0)
    import asyncpg

    return await asyncpg.connect(store.plain_pg_dsn())


async def _error(store: Any, conn: Any, sql: str) -> BaseException:
    try:
        if store.is_sqlite:
            conn.execute(sql)
        else:
            await conn.execute(sql)
    except Exception as exc:
        return exc
    raise AssertionError(f"{sql!r} did not fail")


async def _close(store: Any, conn: Any) -> None:
    if store.is_sqlite:
        conn.close()
    else:
        await conn.close()


async def test_a_duplicate_is_an_integrity_error_and_the_connection_stays(store: Any) -> None:
    conn = await _raw(store)
    try:
        insert = "INSERT INTO durapipe_holds (pipeline, version, created_at) VALUES ('p', '', 0)"
        if store.is_sqlite:
            conn.execute(insert)
        else:
            await conn.execute(insert)
        exc = await _error(store, conn, insert)
        assert classify(exc) is Fault.INTEGRITY
        assert not is_retryable(exc)
        assert is_statement_error(exc) is (not store.is_sqlite)  # PostgreSQL answered it
    finally:
        await _close(store, conn)


async def test_a_missing_table_is_undefined_not_a_lost_connection(store: Any) -> None:
    conn = await _raw(store)
    try:
        exc = await _error(store, conn, "SELECT * FROM durapipe_no_such_table")
        assert classify(exc) is Fault.UNDEFINED_TABLE
        assert not is_retryable(exc)
    finally:
        await _close(store, conn)


async def test_a_syntax_error_is_the_statements(store: Any) -> None:
    conn = await _raw(store)
    try:
        exc = await _error(store, conn, "SELEC 1")
        assert classify(exc) is None
        assert not is_retryable(exc)
    finally:
        await _close(store, conn)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL locks rows and waits
async def test_sqlite_busy_is_locked_and_retried(store: Any) -> None:
    holder = await _raw(store)
    other = await _raw(store)
    try:
        holder.execute("BEGIN IMMEDIATE")
        exc = await _error(store, other, "BEGIN IMMEDIATE")
        assert classify(exc) is Fault.LOCKED
        assert is_retryable(exc)
    finally:
        holder.close()
        other.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL queues its writers
async def test_sqlite_writer_waits_for_the_lock_and_takes_it_once_free(store: Any) -> None:
    """A writer whose BEGIN IMMEDIATE finds the lock taken tries again until it is free (in
    durapipe's loop, not SQLite's busy handler, whose sleeps grow to 100 ms); a wait that runs
    out is SQLite's own "database is locked", which the store classifies and retries."""
    from durapipe._store.sqlite import begin_immediate

    holder = await _raw(store)
    waiter = sqlite3.connect(
        store.url.path, isolation_level=None, timeout=0, check_same_thread=False
    )
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as info:
            begin_immediate(waiter, 0.05)
        assert classify(info.value) is Fault.LOCKED and not waiter.in_transaction
        waiting = asyncio.create_task(asyncio.to_thread(begin_immediate, waiter, 60.0))
        await asyncio.sleep(0.05)  # let it find the lock taken (either order must work)
        holder.execute("ROLLBACK")
        await asyncio.wait_for(waiting, 60)
        assert waiter.in_transaction
        with pytest.raises(sqlite3.OperationalError) as info:
            holder.execute("BEGIN IMMEDIATE")  # the waiter holds it now
        assert classify(info.value) is Fault.LOCKED
        waiter.execute("ROLLBACK")
    finally:
        holder.close()
        waiter.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sqlite_store_write_waits_out_another_writer(store: Any) -> None:
    """The store's writer (SQLAlchemy's engine, BEGIN IMMEDIATE in its begin event) waits for
    another process's lock and writes once it is released; nothing is lost."""
    holder = await _raw(store)
    holder.execute("BEGIN IMMEDIATE")
    try:
        write = asyncio.create_task(store.hold("held_while_locked", None, now=1.0))
        await asyncio.sleep(0.1)
        assert not write.done()  # it waits for the lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await asyncio.wait_for(write, 60)
    assert any(h.pipeline == "held_while_locked" for h in await store.holds())


async def test_a_killed_connection_is_unreachable_and_retried(store: Any) -> None:
    if store.is_sqlite:
        # SQLite has no server: a connection closed under its user is the nearest thing.
        conn = await _raw(store)
        conn.close()
        with pytest.raises(sqlite3.ProgrammingError) as info:
            conn.execute("SELECT 1")
        assert classify(info.value) is None  # a bug of the caller's, not a database away
        return
    victim = await _raw(store)
    admin = await _raw(store)
    try:
        pid = victim.get_server_pid()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        exc = await _error(store, victim, "SELECT 1")
        assert classify(exc) is Fault.UNREACHABLE, repr(exc)
        assert is_retryable(exc) and not is_statement_error(exc)
    finally:
        await admin.close()
        victim.terminate()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no server
async def test_no_server_on_the_port_is_unreachable(store: Any) -> None:
    import asyncpg

    with socket.socket() as s:  # a free loopback port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Exception) as info:
        await asyncio.wait_for(asyncpg.connect(f"postgresql://x@127.0.0.1:{port}/x"), 10)
    assert classify(info.value) is Fault.UNREACHABLE
    assert is_retryable(info.value)


async def test_a_pool_with_no_free_connection_is_a_wait_not_a_crash(store: Any) -> None:
    """Every pooled connection busy past the pool's timeout (too much in flight in one process):
    DatabaseUnavailable, which the worker's loops wait out, not an error that kills a side task.
    The pool's timeout is shortened here; its connections are really held."""
    from durapipe.errors import DatabaseUnavailable

    engine = store.db.sync_reader if store.is_sqlite else store.db.writer
    pool = engine.pool
    pool._timeout = 0.2
    held: list[Any] = []
    try:
        for _ in range(pool.size() + max(pool._max_overflow, 0)):
            if store.is_sqlite:
                held.append(engine.connect())
            else:
                held.append(await engine.connect())
        with pytest.raises(
            DatabaseUnavailable, match="no connection to the database .* became free"
        ):
            await store.get_run("run_nope")
    finally:
        for c in held:
            if store.is_sqlite:
                c.close()
            else:
                await c.close()
    assert await store.get_run("run_nope") is None
