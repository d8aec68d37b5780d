"""The store's plumbing: its dialect, transactions with their retries and errors, the journal's
commits, wake-ups, and the schema check. The queries are in the concern modules built on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql import Select

from ..errors import ConfigError
from . import errors
from .dialect import Dialect, OnChange, T
from .journal import Journal, Op
from .postgres import PostgreSQL, plain_dsn
from .sqlite import SQLite
from .url import DatabaseURL, redact

log = logging.getLogger("durapipe.store")

SCHEMA_REVISION = "0011"  # alembic head; tests/integration/test_migrations.py keeps it true


class StoreBase:
    """An open database: one short transaction per call (see :class:`~.store.Store`)."""

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        self.dialect = url.dialect
        self.is_sqlite = url.dialect == "sqlite"
        self.db: Dialect
        self.db = SQLite(url) if self.is_sqlite else PostgreSQL(url)
        self._lock_said = False
        self.journal = Journal(self)
        # The hot path's write, bound once: the journal calls the dialect directly.
        self.can_append_now = self.db.can_append_now
        self.append_now = self.db.append_now

    # ------------------------------------------------------------------ transactions

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one write transaction."""
        return await self._tx(fn, write=True)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a read-only transaction."""
        return await self._tx(fn, write=False)

    async def _tx(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """One transaction; while another process holds SQLite's write lock, wait and retry
        (saying so once) for DURAPIPE_DB_RETRY_SECONDS, then raise DatabaseUnavailable."""
        delay, deadline = 0.05, None
        while True:
            try:
                out = await self._tx_once(fn, write=write)
            except DBAPIError as exc:
                if not errors.is_locked(exc):
                    raise
                deadline = deadline or time.monotonic() + self.journal.retry_for
                if time.monotonic() > deadline:
                    raise errors.locked_out(self.url, self.journal.retry_for, exc) from exc
                self.note_locked(True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if write:
                self.note_locked(False)
            return out

    async def _tx_once(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        try:
            return await self.db.run(fn, write=write)
        except (OSError, ConnectionError) as exc:
            raise errors.unavailable(self.url, exc) from exc
        except PoolTimeout as exc:  # every pooled connection stayed busy: wait, as when away
            raise errors.pool_exhausted(self.url, exc) from exc
        except DBAPIError as exc:
            if (bad := errors.bad_database(self.url, exc)) is not None:
                raise bad from exc
            if errors.is_transient(exc):
                raise errors.unavailable(self.url, exc) from exc
            raise

    def note_locked(self, locked: bool) -> None:
        """Say once per episode that another process holds the write lock (not per retry)."""
        if locked and not self._lock_said:
            log.warning(
                "database %s is locked by another process; retrying until it is released",
                self.url.path,
            )
        self._lock_said = locked

    def _lock(self, q: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        return self.db.lock(q, skip_locked=skip_locked)

    def _notify(self, conn: Connection, payload: str) -> None:
        self.db.notify(conn, payload)

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run a caller's function on a read connection (tests, tools)."""
        return await self._read(fn)

    def plain_pg_dsn(self) -> str:
        return plain_dsn(self.url)

    async def close(self) -> None:
        await self.journal.close()
        await self.db.close()

    # ------------------------------------------------------------------ journal batch

    @property
    def commits_in_place(self) -> bool:
        """Whether :meth:`commit_now` can commit on the loop's thread (SQLite)."""
        return self.db.commits_in_place

    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None:
        """SQLite only: apply ``ops`` on the loop's thread without waiting for a lock.

        None when that cannot be done at once (PostgreSQL, or another process holds the write
        lock): nothing was written, use :meth:`commit_ops`.
        """
        return self.db.commit_now(ops)

    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]:
        """Apply many runs' ops in one transaction. Each op is checked against its lease."""
        return await self.db.commit_ops(ops)

    @property
    def awaits_in_place(self) -> bool:
        """Whether a caller may commit its own op from its own task (PostgreSQL)."""
        return self.db.awaits_in_place

    async def recorded(self, run_id: str, seq: int) -> bool:
        """Whether event ``seq`` of ``run_id`` is stored."""
        return await self.db.recorded(run_id, seq)

    # ------------------------------------------------------------------ wake-ups

    async def watch(
        self,
        on_change: OnChange,
        *,
        on_listening: Callable[[], None] | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """Call ``on_change(payload)`` whenever another connection commits a change, until
        ``until`` is set or the task is cancelled.

        The payload says what changed: ``"run"`` (a run became runnable, was released or
        finished), ``"control"`` (a stop, cancel or hold was asked of leased runs) or
        ``"input:<run id>"`` (an input arrived for that run). PostgreSQL LISTENs on a connection
        of its own and connects again when the server goes, calling ``on_listening`` each time
        it listens (what was sent meanwhile is lost: look again). SQLite polls
        ``PRAGMA data_version`` every 50 ms and says ``"run"`` for any commit.
        """
        await self.db.watch(on_change, on_listening=on_listening, until=until)

    # ------------------------------------------------------------------ schema

    async def schema_revision(self) -> str | None:
        try:

            def _tx(conn: Connection) -> Any:
                row = (
                    conn.execute(text("SELECT version_num FROM durapipe_alembic_version"))
                ).first()
                return str(row[0]) if row else None

            return await self._read(_tx)
        except SQLAlchemyError as exc:
            # Only a missing table means "not migrated yet"; anything else (a connection, login
            # or missing-database error was already turned into a one-line error by _tx) is
            # what it is, not a reason to tell the user to run `durapipe db upgrade`.
            if errors.is_undefined_table(exc):
                return None
            raise

    async def migrate(self) -> None:
        from .migrate import upgrade_head

        await self._write(upgrade_head)

    async def ensure_schema(self, *, auto_migrate: bool) -> None:
        rev = await self.schema_revision()
        if rev == SCHEMA_REVISION:
            return
        if auto_migrate or (rev is None and self.is_sqlite):
            await self.migrate()
            return
        if rev is None:
            raise ConfigError(
                f"the database {redact(self.url.raw)} has no durapipe tables; run `durapipe db upgrade` first"
            )
        raise ConfigError(
            f"the database is at schema revision {rev}, this durapipe needs {SCHEMA_REVISION}; "
            "run `durapipe db upgrade` (or upgrade durapipe)"
        )
