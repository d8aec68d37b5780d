"""SQLite: the file, its pragmas, the journal's commit on sqlite3, and ``data_version`` wake-ups.

SQLite is driven through the synchronous driver in a dedicated writer thread (and a small reader
pool), so a whole transaction costs one hop between threads instead of one per statement. The
journal commits on the loop's own thread when the write lock is free at once (no hop at all).
An ``async def`` @dp.transaction gets an ``AsyncConnection`` of an aiosqlite engine on the same
file, made when the first one runs (BEGIN IMMEDIATE, the same pragmas as the writer).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from .. import _config
from ..errors import ConfigError, LeaseLost
from . import errors, journal_sql
from .dialect import Dialect, OnChange, T
from .journal import Op
from .journal_sql import ROW_COLS
from .url import DatabaseURL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# How often the watch reads PRAGMA data_version: it costs microseconds and takes no lock.
WATCH_INTERVAL = 0.05
# How often a writer waiting for another connection's write lock tries again, seconds. SQLite's
# own busy handler sleeps 1, 2, 5, 10 ... 25 ms and, after 0.1 s, 50 and then 100 ms at a
# time: a worker's commit that has waited a moment wakes up to 100 ms after the lock is free,
# and another process writing back to back (gc, a second worker) has taken it again by then.
# Trying every millisecond gets the lock within about a millisecond of its release.
BUSY_POLL = 0.001


def synchronous() -> str:
    mode = os.environ.get("DURAPIPE_SQLITE_SYNCHRONOUS", "FULL").upper()
    if mode not in ("FULL", "NORMAL", "EXTRA", "OFF"):
        raise ConfigError(f"DURAPIPE_SQLITE_SYNCHRONOUS={mode!r}: use FULL, NORMAL, EXTRA or OFF")
    return mode


class SQLite(Dialect):
    is_sqlite = True

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__(url)
        assert url.path is not None
        self.path = url.path
        if os.path.isdir(url.path):
            raise ConfigError(
                f"the SQLite database {url.path!r} is a folder; give a file path, e.g. "
                f"sqlite:///{os.path.join(url.path, 'durapipe.db')}"
            )
        if not os.path.exists(url.path):
            parent = os.path.dirname(os.path.abspath(url.path))
            if not os.path.isdir(parent):
                raise ConfigError(
                    f"cannot create the SQLite database {url.path!r}: folder {parent!r} does not exist"
                )
            # Readable by its owner only: the history holds inputs and outputs.
            os.close(os.open(url.path, os.O_CREAT | os.O_RDWR, 0o600))
        sync = synchronous()
        plain = f"sqlite:///{url.path}"
        self._busy_ms = busy_ms = int(_config.db_timeout() * 1000)
        args = {"timeout": busy_ms / 1000, "check_same_thread": False}
        self.sync_writer = create_engine(
            plain, poolclass=QueuePool, pool_size=1, max_overflow=0, connect_args=args
        )
        self.sync_reader = create_engine(
            plain, poolclass=QueuePool, pool_size=2, max_overflow=0, connect_args=args
        )
        _sqlite_events(self.sync_writer, "BEGIN IMMEDIATE", sync, busy_ms, poll=True)
        _sqlite_events(self.sync_reader, "BEGIN", sync, busy_ms)
        self._wx = ThreadPoolExecutor(1, thread_name_prefix="durapipe-sqlite-w")
        self._rx = ThreadPoolExecutor(2, thread_name_prefix="durapipe-sqlite-r")
        self._jconn: sqlite3.Connection | None = None  # the journal's, in the writer thread
        self._iconn: sqlite3.Connection | None = None  # the journal's, on the loop's thread
        self._awriter: AsyncEngine | None = None  # async transactions' (see async_writer)

    async def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        pool, engine = (self._wx, self.sync_writer) if write else (self._rx, self.sync_reader)
        return await asyncio.get_running_loop().run_in_executor(pool, _sync_tx, engine, fn)

    def async_writer(self) -> AsyncEngine:
        """The engine of ``async def`` @dp.transaction steps: aiosqlite on the same file, made
        on first use (a store that never runs one never imports it). Its transactions begin
        with BEGIN IMMEDIATE, so the write lock is taken before the body's first statement, as
        in the writer thread; another connection's lock is waited for (busy timeout) in
        aiosqlite's thread, never on the loop."""
        if self._awriter is None:
            # Imported here: sqlalchemy.ext.asyncio pulls in the ORM, and aiosqlite is needed
            # only by async transactions.
            from sqlalchemy.ext.asyncio import create_async_engine

            self._awriter = create_async_engine(
                f"sqlite+aiosqlite:///{self.path}",
                connect_args={"timeout": self._busy_ms / 1000},
            )
            begin, busy_ms = "BEGIN IMMEDIATE", self._busy_ms
            _sqlite_events(self._awriter.sync_engine, begin, synchronous(), busy_ms)
        return self._awriter

    # ------------------------------------------------------------------ journal batch

    @property
    def commits_in_place(self) -> bool:
        return True

    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None:
        try:
            if journal_sql.simple(ops):
                return run_simple(self._inline_conn(), ops)
            return run(self._inline_conn(), ops)
        except sqlite3.OperationalError as exc:
            if not errors.is_locked(exc):
                raise
            return None

    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]:
        # On the loop's thread, without waiting for a lock: saves a thread hop per batch.
        done = self.commit_now(ops)
        if done is not None:
            return done
        # Another process holds the write lock: wait for it in the writer thread instead.
        return await asyncio.get_running_loop().run_in_executor(self._wx, self._commit_waiting, ops)

    def _raw(self, busy_ms: int) -> sqlite3.Connection:
        """A connection of the journal's. Its busy timeout stays 0 after the pragmas: a write
        transaction waits for the lock in :func:`begin_immediate`, not in SQLite's handler."""
        conn = sqlite3.connect(
            self.path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous()}")
            conn.execute("PRAGMA busy_timeout=0")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if (bad := errors.bad_database(self.url, exc)) is not None:
                raise bad from exc
            raise
        return conn

    def _inline_conn(self) -> sqlite3.Connection:
        if self._iconn is None:
            self._iconn = self._raw(0)
        return self._iconn

    def _commit_waiting(self, ops: list[Op]) -> list[BaseException | None]:
        # Runs in the writer thread only, where waiting for another process's lock is fine.
        if self._jconn is None:
            self._jconn = self._raw(self._busy_ms)
        return run(self._jconn, ops, wait=self._busy_ms / 1000)

    # ------------------------------------------------------------------ wake-ups

    async def watch(
        self,
        on_change: OnChange,
        *,
        on_listening: Callable[[], None] | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """SQLite's LISTEN: PRAGMA data_version changes when another connection commits.

        Read every 50 ms, it wakes the claim loop and waiting runs promptly instead of at the
        next poll. A commit says only that something changed, so the payload is "run".
        """
        conn = sqlite3.connect(self.path, timeout=1, isolation_level=None)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            if on_listening is not None:
                on_listening()  # from here on, every commit of another connection is seen
            while until is None or not until.is_set():
                await asyncio.sleep(WATCH_INTERVAL)
                try:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if now != last:
                    last = now
                    on_change("run")
        finally:
            conn.close()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._iconn is not None:
            self._iconn.close()
            self._iconn = None
        if self._jconn is not None:
            await loop.run_in_executor(self._wx, self._jconn.close)
            self._jconn = None
        for ex, eng in ((self._wx, self.sync_writer), (self._rx, self.sync_reader)):
            await loop.run_in_executor(ex, eng.dispose)
            ex.shutdown(wait=False)
        if self._awriter is not None:
            await self._awriter.dispose()
            self._awriter = None


def _sync_tx(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _sqlite_events(
    engine: Engine, begin: str, synchronous: str, busy_ms: int, *, poll: bool = False
) -> None:
    """Pragmas on connect, and our own BEGIN. ``poll`` (a sqlite3 writer): the busy timeout is
    0 once connected and BEGIN IMMEDIATE waits for the lock in :func:`begin_immediate`."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={0 if poll else busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if poll and _begun(conn.connection.driver_connection, busy_ms / 1000):
            return
        conn.exec_driver_sql(begin)  # the error, as SQLAlchemy raises it (or an unpolled BEGIN)


def begin_immediate(conn: sqlite3.Connection, wait: float) -> None:
    """BEGIN IMMEDIATE on ``conn`` (busy timeout 0), trying again every BUSY_POLL seconds
    while another connection holds the write lock, for ``wait`` seconds at most; then the
    "database is locked" error."""
    if wait <= 0 or not _begun(conn, wait):
        conn.execute("BEGIN IMMEDIATE")


def _begun(conn: sqlite3.Connection, wait: float) -> bool:
    """Whether BEGIN IMMEDIATE succeeded within ``wait`` seconds (False: the lock stayed
    taken; errors other than a taken lock are raised)."""
    deadline = None
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if not errors.is_locked(exc):
                raise
        now = time.monotonic()
        if deadline is None:
            deadline = now + wait
        if now >= deadline:
            return False
        time.sleep(BUSY_POLL)


# ---------------------------------------------------------------------- the journal on sqlite3


def run(conn: sqlite3.Connection, ops: list[Op], wait: float = 0.0) -> list[BaseException | None]:
    """Apply ``ops`` in one write transaction, as :func:`journal_sql.plan` says, waiting up to
    ``wait`` seconds for another connection's write lock."""
    gen = journal_sql.plan(ops, pg=False)
    begin_immediate(conn, wait)
    try:
        res: Any = None
        while True:
            try:
                kind, sql, args = gen.send(res)
            except StopIteration as stop:
                conn.execute("COMMIT")
                return list(stop.value)
            if kind == "fetch":
                res = conn.execute(sql, args).fetchall()
            elif kind == "many":
                conn.executemany(sql, args)
                res = None
            else:
                conn.execute(sql, args)
                res = None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_FENCED_EVENT = (
    f"INSERT INTO durapipe_events ({', '.join(ROW_COLS)}) "
    f"SELECT {', '.join('?' * len(ROW_COLS))} WHERE EXISTS ("
    "SELECT 1 FROM durapipe_runs WHERE id = ? AND lease_owner = ? AND attempt = ?)"
)


def run_simple(conn: sqlite3.Connection, ops: list[Op]) -> list[BaseException | None]:
    """Ops that only append events under a lease (see :func:`journal_sql.simple`): each event
    is inserted only if its run's lease is still the op's, in one statement per op (the hot
    path)."""
    begin_immediate(conn, 0.0)
    try:
        results: list[BaseException | None] = []
        for op in ops:
            fence = (op.run_id, op.owner, op.attempt)
            rows = journal_sql.event_rows(op.events)
            cur = conn.executemany(_FENCED_EVENT, [row + fence for row in rows])
            # All or none: the lease cannot change inside this write transaction.
            ok = cur.rowcount == len(rows)
            results.append(None if ok else LeaseLost(f"run {op.run_id}: lease lost"))
        conn.execute("COMMIT")
        return results
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
