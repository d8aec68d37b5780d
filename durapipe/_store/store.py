"""The Store: every SQL statement durapipe runs lives here.

SQLite and PostgreSQL sit behind the same methods. Writes that belong to a run's history go
through :class:`Journal` (group commit, fencing); the rest are short transactions of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from .. import _config
from ..errors import ConfigError, DatabaseUnavailable
from . import journal_sql
from . import schema as S
from .url import DatabaseURL, pg_database_name, redact, resolve_url

log = logging.getLogger("durapipe.store")
T = TypeVar("T")

SCHEMA_REVISION = "0001"  # alembic head; tests/integration/test_migrations.py keeps it true
NOTIFY_CHANNEL = "durapipe"


def _sqlite_synchronous() -> str:
    mode = os.environ.get("DURAPIPE_SQLITE_SYNCHRONOUS", "FULL").upper()
    if mode not in ("FULL", "NORMAL", "EXTRA", "OFF"):
        raise ConfigError(f"DURAPIPE_SQLITE_SYNCHRONOUS={mode!r}: use FULL, NORMAL, EXTRA or OFF")
    return mode


@dataclass(frozen=True, kw_only=True)
class ClaimFilter:
    """Which runs a runner may take."""

    pipelines: dict[str, str] | None = None  # name -> version it carries; None = any
    root_run_id: str | None = None  # only this run tree (durapipe run / resume)
    # Lease holders known dead (processes of this host that are gone): their runs are taken at
    # once, as `durapipe resume` takes the root run, instead of after their leases expire.
    dead_owners: tuple[str, ...] = ()


@dataclass(slots=True)
class Claimed:
    """What one claim took: rows, their histories, and when the next run becomes due."""

    rows: list[Any]
    histories: dict[str, list[Any]]
    next_at: float | None


@dataclass(slots=True, kw_only=True)
class Op:
    """One atomic change to one run's history, checked against its lease."""

    run_id: str
    owner: str | None  # None: no lease check (a client acting on an unleased run)
    attempt: int | None
    events: list[dict[str, Any]] = field(default_factory=list)
    run_update: dict[str, Any] | None = None
    new_runs: list[dict[str, Any]] = field(default_factory=list)
    consume_input: int | None = None
    consume_seq: int | None = None
    wake_parent: str | None = None  # a parent run to make runnable now (child finished)
    # When suspending: wake at once if what the run waits for arrived meanwhile (no lost wake-ups),
    # or if a stop or cancel was asked of it (``suspend``), checked under the lease's row lock.
    suspend: bool = False
    wake_if_input: str | None = None
    wake_if_child: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)  # log lines carried by the batch
    future: asyncio.Future[None] | None = None


def _pg_timeouts() -> tuple[float, dict[str, str]]:
    """How long one statement may take on PostgreSQL, and the server setting that ends a session
    idle inside a transaction after as long (DURAPIPE_DB_TIMEOUT, seconds, default 30).

    Without them a connection the network dropped without a word (a NAT or firewall forgetting
    it, a failover moving the address) hangs its worker forever, and a transaction cut off
    between its UPDATE and COMMIT keeps the run's row locked so no other worker can take over
    (tests/acceptance/test_partition.py).
    """
    timeout = _config.db_timeout()
    return timeout, {"idle_in_transaction_session_timeout": str(int(timeout * 1000))}


_RUN_FIELDS = tuple(c.name for c in S.runs.c)
_NewRun = namedtuple("_NewRun", _RUN_FIELDS)  # type: ignore[misc]  # a just-inserted run, as a row


def _is_integrity(exc: BaseException) -> bool:
    if isinstance(exc, IntegrityError | sqlite3.IntegrityError):
        return True
    return type(exc).__name__ in ("UniqueViolationError", "IntegrityConstraintViolationError")


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConfigError) or _bad_database(exc) is not None:
        return False
    if isinstance(exc, DatabaseUnavailable | sqlite3.OperationalError | OSError | ConnectionError):
        return True
    if isinstance(exc, SQLAlchemyError):
        return _is_transient(exc)
    return not _pg_statement_error(exc) and type(exc).__module__.startswith("asyncpg")


# SQLSTATEs that mean "the server is not there right now", not "your statement is wrong":
# class 08 (connection exception), 57P01-57P03 (admin/crash shutdown, cannot connect now),
# 53300 (too many connections).
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it was raised from) says the database is unreachable."""
    if _bad_database(exc) is not None:  # no such database, bad login: waiting will not help
        return False
    for e in _chain(exc):
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, OperationalError | OSError | ConnectionError):
            return True
        name = type(e).__name__
        if "Connection" in name or "CannotConnect" in name:
            return True
        state = _sqlstate(e)
        if state is not None and state.startswith(_TRANSIENT_SQLSTATES):
            return True
    return False


# SQLSTATEs that mean "this URL names nothing this user can use", which no retry will change:
# 3D000 the database does not exist, 28000/28P01 the role is unknown or the password wrong (or
# pg_hba.conf turns the connection away), 42501 the role may not connect (no CONNECT privilege).
_BAD_DATABASE_SQLSTATES = ("3D000", "28000", "28P01", "42501")
# What SQLite says of a file that is not a SQLite database (or one it cannot decrypt).
_NOT_SQLITE = ("file is not a database", "file is encrypted")
# What SQLite says of a file it may not write (permissions, a read-only mount) or cannot open.
_SQLITE_UNUSABLE = ("readonly database", "unable to open database file")


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it was raised from (DBAPI ``orig``, then ``__cause__``)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "orig", None) or e.__cause__


def _sqlstate(e: BaseException) -> str | None:
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    return state if isinstance(state, str) else None


def _bad_database(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain saying the URL names no database this user can use (missing
    database, unknown role, wrong password, no privilege, a file that is not SQLite), or None."""
    for e in _chain(exc):
        if _sqlstate(e) in _BAD_DATABASE_SQLSTATES:
            return e
        if isinstance(e, sqlite3.DatabaseError) and any(
            m in str(e) for m in _NOT_SQLITE + _SQLITE_UNUSABLE
        ):
            return e
    return None


def _is_undefined_table(exc: BaseException) -> bool:
    """Whether ``exc`` says a table does not exist (PostgreSQL 42P01, SQLite "no such table")."""
    for e in _chain(exc):
        if _sqlstate(e) == "42P01":
            return True
        if isinstance(e, sqlite3.OperationalError) and "no such table" in str(e):
            return True
    return False


class Store:
    """An open durapipe database (``dp.Store``): hand it to ``dp.Client`` and the testing kit.

    Open one with ``await dp.open_store(url)`` (the pytest fixture ``durapipe_store`` is one)
    and close it with ``await store.close()``. Its other methods are internal, not public API.

    Internals: all SQL. Each public method is one short transaction.

    SQLite is driven through the synchronous driver in a dedicated writer thread (and a small
    reader pool), so a whole transaction costs one hop between threads instead of one per
    statement. PostgreSQL uses SQLAlchemy's async engine on asyncpg; the same transaction
    functions run on it through ``run_sync``.
    """

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        self.dialect = url.dialect
        self.is_sqlite = url.dialect == "sqlite"
        self._wx: ThreadPoolExecutor | None = None
        self._rx: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            assert url.path is not None
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
            sync = _sqlite_synchronous()
            plain = f"sqlite:///{url.path}"
            self._busy_ms = busy_ms = int(_config.db_timeout() * 1000)
            args = {"timeout": busy_ms / 1000, "check_same_thread": False}
            self.sync_writer = create_engine(
                plain, poolclass=QueuePool, pool_size=1, max_overflow=0, connect_args=args
            )
            self.sync_reader = create_engine(
                plain, poolclass=QueuePool, pool_size=2, max_overflow=0, connect_args=args
            )
            _sqlite_events(self.sync_writer, "BEGIN IMMEDIATE", sync, busy_ms)
            _sqlite_events(self.sync_reader, "BEGIN", sync, busy_ms)
            self._wx = ThreadPoolExecutor(1, thread_name_prefix="durapipe-sqlite-w")
            self._rx = ThreadPoolExecutor(2, thread_name_prefix="durapipe-sqlite-r")
        else:
            # Imported here: sqlalchemy.ext.asyncio pulls in the ORM, which SQLite never needs.
            from sqlalchemy.ext.asyncio import create_async_engine

            self._pg_limits = timeout, server = _pg_timeouts()
            import asyncpg

            dsn = self.plain_pg_dsn()
            settings = {"application_name": "durapipe", **server}

            def connect() -> Any:
                # asyncpg reads the URL itself, as for the journal's and LISTEN's connections:
                # one parser for ?sslmode=, ?password= and the rest, on every connection.
                return asyncpg.connect(
                    dsn, timeout=10, command_timeout=timeout, server_settings=settings
                )

            self.writer = create_async_engine(
                "postgresql+asyncpg://",
                async_creator=connect,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,  # survive a server restart: stale pooled connections are replaced
            )
        self._jconn: sqlite3.Connection | None = None
        self._iconn: sqlite3.Connection | None = None
        self._apg: Any = None
        self._lock_said = False
        self.journal = Journal(self)

    # ------------------------------------------------------------------ plumbing

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
                if not (self.is_sqlite and _is_busy(exc)):
                    raise
                deadline = deadline or time.monotonic() + self.journal.retry_for
                if time.monotonic() > deadline:
                    raise self._locked_out(exc) from exc
                self.note_locked(True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if write:
                self.note_locked(False)
            return out

    def note_locked(self, locked: bool) -> None:
        """Say once per episode that another process holds the write lock (not per retry)."""
        if locked and not self._lock_said:
            log.warning(
                "database %s is locked by another process; retrying until it is released",
                self.url.path,
            )
        self._lock_said = locked

    def _locked_out(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"the database {self.url.path} stayed locked by another process for "
            f"{self.journal.retry_for:g}s ({redact(str(getattr(exc, 'orig', None) or exc))}); "
            "it is retried again later (DURAPIPE_DB_RETRY_SECONDS)"
        )

    async def _tx_once(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        try:
            if self.is_sqlite:
                pool, engine = (
                    (self._wx, self.sync_writer) if write else (self._rx, self.sync_reader)
                )
                return await asyncio.get_running_loop().run_in_executor(pool, _sync_tx, engine, fn)
            async with self.writer.begin() if write else self.writer.connect() as conn:
                return await conn.run_sync(fn)
        except (OSError, ConnectionError) as exc:
            raise self._unavailable(exc) from exc
        except DBAPIError as exc:
            if (bad := self._bad_database(exc)) is not None:
                raise bad from exc
            if exc.connection_invalidated or _is_transient(exc.orig or exc) and not _is_busy(exc):
                raise self._unavailable(exc) from exc
            raise

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run a caller's function on a read connection (tests, tools)."""
        return await self._read(fn)

    def _bad_database(self, exc: BaseException) -> ConfigError | None:
        """A one-line error for a URL naming no database this user can use, or None.

        Not a :class:`DatabaseUnavailable`: waiting does not fix a missing database or a wrong
        password, so workers must not retry it.
        """
        cause = _bad_database(exc)
        if cause is None:
            return None
        detail = redact((str(cause).strip().splitlines() or [type(cause).__name__])[0])
        where = "--database-url / DURAPIPE_DATABASE_URL"
        if self.is_sqlite and any(m in detail for m in _SQLITE_UNUSABLE):
            return ConfigError(
                f"cannot write the SQLite database {self.url.path} ({detail}); give this user "
                f"write access to it and to its folder, or point {where} at a writable file"
            )
        if self.is_sqlite:
            return ConfigError(
                f"{self.url.path} is not a SQLite database ({detail}); point {where} at a "
                "durapipe database, or at a file that does not exist yet to create one"
            )
        url = redact(self.url.raw)
        state = _sqlstate(cause)
        if state == "3D000":
            name = pg_database_name(self.url.raw)
            quoted = name.replace('"', '""')
            create = f'create it (CREATE DATABASE "{quoted}")' if name else "create it"
            return ConfigError(
                f"the database {url} does not exist ({detail}); {create} and run "
                f"`durapipe db upgrade`, or point {where} at an existing database"
            )
        if state == "42501":
            grant = "GRANT CONNECT" if "for database" in detail else "GRANT the privileges"
            return ConfigError(
                f"the database {url} refused this user ({detail}); {grant} to it, or give "
                f"another user in {where}"
            )
        return ConfigError(
            f"cannot log in to the database {url} ({detail}); check the user and password "
            f"in {where}"
        )

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        detail = redact(
            str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if str(exc).strip()
            else type(exc).__name__
        )
        return DatabaseUnavailable(
            f"cannot reach the database {redact(self.url.raw)}: {detail}. "
            "Check --database-url / DURAPIPE_DATABASE_URL and that the server is up"
        )

    async def close(self) -> None:
        await self.journal.close()
        if self._apg is not None:
            with contextlib.suppress(Exception):
                await self._apg.close()
            self._apg = None
        if self.is_sqlite:
            if self._iconn is not None:
                self._iconn.close()
                self._iconn = None
            if self._jconn is not None and self._wx is not None:
                await asyncio.get_running_loop().run_in_executor(self._wx, self._jconn.close)
                self._jconn = None
            loop = asyncio.get_running_loop()
            for ex, eng in ((self._wx, self.sync_writer), (self._rx, self.sync_reader)):
                if ex is not None:
                    await loop.run_in_executor(ex, eng.dispose)
                    ex.shutdown(wait=False)
        else:
            await self.writer.dispose()

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
            if _is_undefined_table(exc):
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

    # ------------------------------------------------------------------ runs

    async def create_run(
        self, row: dict[str, Any], first_events: list[dict[str, Any]]
    ) -> tuple[Any, bool]:
        """Insert a run; if its id exists already return that run instead. -> (row, created).

        The insert goes through the journal, so runs started at the same moment (a burst of
        ``Client.start``) share one transaction, as steps do.
        """
        full = {c: row.get(c) for c in _RUN_FIELDS}
        try:
            await self.journal.submit(
                Op(run_id=row["id"], owner=None, attempt=None, new_runs=[full], events=first_events)
            )
        except Exception as exc:
            if not _is_integrity(exc):
                raise
            existing = await self.get_run(row["id"])
            if existing is None:  # the clash was not on the run's id
                raise
            return existing, False
        return _NewRun(**full), True

    async def get_run(self, run_id: str) -> Row[Any] | None:
        def _tx(conn: Connection) -> Any:
            return (conn.execute(select(S.runs).where(S.runs.c.id == run_id))).first()

        return await self._read(_tx)

    async def get_runs(self, run_ids: Sequence[str]) -> list[Row[Any]]:
        if not run_ids:
            return []

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(select(S.runs).where(S.runs.c.id.in_(list(run_ids))))).all())

        return await self._read(_tx)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        root_run_id: str | None = None,
        limit: int = 200,
    ) -> list[Row[Any]]:
        q = select(S.runs)
        if status:
            q = q.where(S.runs.c.status == status)
        if pipeline:
            q = q.where(S.runs.c.pipeline == pipeline)
        if roots_only:
            q = q.where(S.runs.c.parent_run_id.is_(None))
        if root_run_id:
            q = q.where(S.runs.c.root_run_id == root_run_id)
        q = q.order_by(S.runs.c.created_at.desc(), S.runs.c.id.desc()).limit(limit)

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    async def children(self, run_id: str) -> list[Row[Any]]:
        q = select(S.runs).where(S.runs.c.parent_run_id == run_id).order_by(S.runs.c.created_at)

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    async def count_by_status(
        self, *, pipeline: str | None = None, roots_only: bool = False
    ) -> dict[str, int]:
        q = select(S.runs.c.status, func.count()).group_by(S.runs.c.status)
        if pipeline:
            q = q.where(S.runs.c.pipeline == pipeline)
        if roots_only:
            q = q.where(S.runs.c.parent_run_id.is_(None))

        def _tx(conn: Connection) -> Any:
            return {str(s): int(n) for s, n in (conn.execute(q)).all()}

        return await self._read(_tx)

    async def events(self, run_id: str) -> list[Row[Any]]:
        """The whole history of a run, in order: one query, however long."""
        q = select(S.events).where(S.events.c.run_id == run_id).order_by(S.events.c.seq)

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    async def timelines(self, run_ids: Sequence[str]) -> dict[str, list[Any]]:
        """What working time is computed from, for several runs in one pass: the events that
        start and end executions, waits and commands (``kind, step, at``), in order."""
        e = S.events.c
        out: dict[str, list[Any]] = {rid: [] for rid in run_ids}
        ids = list(run_ids)

        def _tx(conn: Connection) -> Any:
            for i in range(0, len(ids), 500):
                q = (
                    select(e.run_id, e.kind, e.step, e.at)
                    .where(e.run_id.in_(ids[i : i + 500]), e.kind.in_(S.TIMELINE_KINDS))
                    .order_by(e.run_id, e.seq)
                )
                for row in conn.execute(q).all():
                    out[row.run_id].append(row)
            return out

        return await self._read(_tx)

    def _runnable(self, now: float, flt: ClaimFilter) -> Any:
        r = S.runs.c
        due = or_(
            and_(r.status == "pending", r.lease_owner.is_(None)),
            and_(r.status.in_(S.SUSPENDABLE), r.lease_owner.is_(None), r.wake_at <= now),
            and_(r.status.in_(S.ACTIVE), r.lease_owner.is_not(None), r.lease_expires_at < now),
        )
        if flt.dead_owners:
            due = or_(due, and_(r.status.in_(S.ACTIVE), r.lease_owner.in_(list(flt.dead_owners))))
        return and_(due, *self._claimable(flt))

    def _claimable(self, flt: ClaimFilter) -> list[Any]:
        """What a worker with filter ``flt`` may take at all (its pipelines, not held)."""
        r = S.runs.c
        conds: list[Any] = []
        if flt.pipelines is not None:
            conds.append(
                or_(
                    *(
                        and_(r.pipeline == name, or_(r.pinned.is_(False), r.version == ver))
                        for name, ver in flt.pipelines.items()
                    )
                )
                if flt.pipelines
                else text("1=0")
            )
        if flt.root_run_id is not None:
            conds.append(r.root_run_id == flt.root_run_id)
        held = select(S.holds.c.pipeline).where(
            S.holds.c.pipeline == r.pipeline,
            or_(S.holds.c.version == "", S.holds.c.version == r.version),
        )
        conds.append(~held.exists())
        return conds

    async def claim(
        self, *, owner: str, flt: ClaimFilter, limit: int, ttl: float, now: float
    ) -> Claimed:
        """Take the leases of up to ``limit`` runnable runs in one statement.

        Also read in the same transaction: the claimed runs' histories, and when the next run
        this worker could take becomes due (a timer, or a lease about to expire), so the worker
        sleeps until then instead of a whole poll interval.
        """
        if limit <= 0:
            return Claimed([], {}, None)
        r = S.runs.c
        pick = (
            select(r.id)
            .where(self._runnable(now, flt))
            .order_by(func.coalesce(r.wake_at, r.created_at), r.id)
            .limit(limit)
        )
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        later = self._claimable(flt)
        next_due = select(
            select(func.min(r.wake_at))
            .where(r.status.in_(S.SUSPENDABLE), r.lease_owner.is_(None), r.wake_at > now, *later)
            .scalar_subquery(),
            select(func.min(r.lease_expires_at))
            .where(
                r.status.in_(S.ACTIVE),
                r.lease_owner.is_not(None),
                r.lease_expires_at >= now,
                *later,
            )
            .scalar_subquery(),
        )
        stmt = (
            update(S.runs)
            .where(r.id.in_(pick.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status="running",
                updated_at=now,
            )
            .returning(*S.runs.c)
        )

        def _tx(conn: Connection) -> Any:
            rows = list((conn.execute(stmt)).all())
            nxt = conn.execute(next_due).first()
            times = [t for t in (nxt or ()) if t is not None]
            next_at = min(times) if times else None
            histories: dict[str, list[Any]] = {row.id: [] for row in rows}
            if rows:
                # The claimed runs' histories in the same round of work: one query for the
                # batch instead of one read per run when each starts.
                ev = S.events.c
                q = (
                    select(S.events)
                    .where(ev.run_id.in_(list(histories)))
                    .order_by(ev.run_id, ev.seq)
                )
                for e in conn.execute(q):
                    histories[e.run_id].append(e)
            return Claimed(rows, histories, next_at)

        return await self._write(_tx)

    async def claim_run(
        self,
        run_id: str,
        *,
        owner: str,
        ttl: float,
        now: float,
        statuses: Iterable[str],
        dead_owners: Iterable[str] = (),
    ) -> Row[Any] | None:
        """Take one run's lease if it is free, expired, or held by a dead process of this host."""
        r = S.runs.c
        free = or_(r.lease_owner.is_(None), r.lease_expires_at < now, r.lease_owner == owner)
        dead = list(dead_owners)
        if dead:
            free = or_(free, r.lease_owner.in_(dead))
        stmt = (
            update(S.runs)
            .where(r.id == run_id, r.status.in_(list(statuses)), free)
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status="running",
                requested=None,
                updated_at=now,
            )
            .returning(*S.runs.c)
        )

        def _tx(conn: Connection) -> Any:
            return (conn.execute(stmt)).first()

        return await self._write(_tx)

    async def heartbeat(
        self, *, worker_id: str, held: dict[str, int], ttl: float, now: float
    ) -> tuple[set[str], dict[str, str]]:
        """Extend the leases of held runs. -> (runs lost, {run_id: request})."""
        r = S.runs.c
        lost: set[str] = set()
        requests: dict[str, str] = {}

        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.workers).where(S.workers.c.id == worker_id).values(heartbeat_at=now)
            )
            if held:
                ids = list(held)
                conn.execute(
                    update(S.runs)
                    .where(r.id.in_(ids), r.lease_owner == worker_id)
                    .values(lease_expires_at=now + ttl)
                )
                rows = (
                    conn.execute(
                        select(r.id, r.lease_owner, r.attempt, r.requested).where(r.id.in_(ids))
                    )
                ).all()
                seen = set()
                for rid, lo, att, req in rows:
                    seen.add(rid)
                    if lo != worker_id or att != held[rid]:
                        lost.add(rid)
                    elif req:
                        requests[rid] = req
                lost.update(set(ids) - seen)

        await self._write(_tx)
        return lost, requests

    async def requests_for(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        r = S.runs.c

        def _tx(conn: Connection) -> dict[str, str]:
            rows = conn.execute(
                select(r.id, r.requested).where(r.id.in_(list(run_ids)), r.requested.is_not(None))
            ).all()
            return {rid: req for rid, req in rows}

        return await self._read(_tx)

    async def release(self, run_id: str, *, owner: str, attempt: int, now: float) -> None:
        """Give a lease back; a run that was mid-flight becomes pending for any worker."""
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.lease_owner == owner, r.attempt == attempt)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    status=case((r.status == "running", "pending"), else_=r.status),
                    requested=case((r.requested == "hold", None), else_=r.requested),
                    updated_at=now,
                )
            )
            self._notify(conn, "run")

        return await self._write(_tx)

    async def set_request(
        self, run_id: str, request: str | None, *, now: float, wake: bool = False
    ) -> None:
        """Record a request (stop, stop_now, cancel...) for whoever holds the run.

        A stop or cancel asked of a run its holder has meanwhile suspended (no lease, sleeping
        or waiting) also makes it due now, so a worker takes it and acts on the request instead
        of when its timer or input comes. The UPDATE locks the row as the suspending write
        does, which checks the request from its side (see ``Op.suspend``).
        """
        r = S.runs.c
        values: dict[str, Any] = {"requested": request, "updated_at": now}
        if wake:
            values["wake_at"] = now
        elif request in journal_sql.WAKING_REQUESTS:
            values["wake_at"] = case(
                (and_(r.lease_owner.is_(None), r.status.in_(S.SUSPENDABLE)), now),
                else_=r.wake_at,
            )

        def _tx(conn: Connection) -> Any:
            conn.execute(update(S.runs).where(S.runs.c.id == run_id).values(**values))
            self._notify(conn, "control")

        return await self._write(_tx)

    async def finish_unleased(
        self, run_id: str, *, status: str, event: dict[str, Any], now: float, expect: Iterable[str]
    ) -> bool:
        """End or stop a run nobody holds (a client acting on a suspended run).

        -> False (nothing written) when the run is not in a state of ``expect`` or a live lease
        holds it: a worker claimed it meanwhile. Like every write to a run's history, it first
        locks the run's row (FOR UPDATE; SQLite's write transaction is BEGIN IMMEDIATE), so no
        claim or leased append can slip between the check and the append of the next seq.
        Taking over an expired lease bumps the attempt, fencing off its holder's writes and
        log lines.
        """
        r = S.runs.c
        read = select(
            r.status, r.lease_owner, r.lease_expires_at, r.parent_run_id, r.attempt
        ).where(r.id == run_id)
        if not self.is_sqlite:
            read = read.with_for_update()

        def _tx(conn: Connection) -> Any:
            row = (conn.execute(read)).first()
            if row is None or row.status not in set(expect):
                return False
            if row.lease_owner is not None and (row.lease_expires_at or 0) >= now:
                return False
            attempt = int(row.attempt) + (1 if row.lease_owner is not None else 0)
            seq = (
                conn.execute(
                    select(func.coalesce(func.max(S.events.c.seq), 0)).where(
                        S.events.c.run_id == run_id
                    )
                )
            ).scalar_one()
            conn.execute(
                insert(S.events).values(
                    {**event, "run_id": run_id, "seq": int(seq) + 1, "at": now, "attempt": attempt}
                )
            )
            values: dict[str, Any] = {
                "attempt": attempt,
                "status": status,
                "updated_at": now,
                "requested": None,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if status in S.TERMINAL:
                values["finished_at"] = now
                values["wake_at"] = None
            conn.execute(update(S.runs).where(r.id == run_id).values(**values))
            if status in S.TERMINAL and row.parent_run_id:
                conn.execute(
                    update(S.runs)
                    .where(r.id == row.parent_run_id, r.status == "waiting")
                    .values(wake_at=now)
                )
            self._notify(conn, "run")
            return True

        return bool(await self._write(_tx))

    async def make_runnable(self, run_id: str, *, now: float, statuses: Iterable[str]) -> bool:
        """Release a stopped/failed/blocked run to the workers (resume --detach)."""
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            res = conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.status.in_(list(statuses)))
                .values(
                    status="pending",
                    requested=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            self._notify(conn, "run")
            return bool(res.rowcount)

        return await self._write(_tx)

    # ------------------------------------------------------------------ inputs

    async def send_input(self, run_id: str, name: str, value: str, *, now: float) -> int:
        r = S.runs.c
        # The run's row is locked first, as a suspending worker's write locks it (FOR UPDATE;
        # SQLite's write transaction is BEGIN IMMEDIATE): either that write sees this input and
        # stays due, or this one sees the run suspended and wakes it. Without the lock, an
        # input committed just after the suspending write had looked (and just after this
        # transaction found the run still leased) woke nobody.
        lock = select(r.id).where(r.id == run_id)
        if not self.is_sqlite:
            lock = lock.with_for_update()

        def _tx(conn: Connection) -> Any:
            conn.execute(lock)
            res = conn.execute(
                insert(S.inputs).values(run_id=run_id, name=name, value=value, created_at=now)
            )
            # A suspended run waiting for anything wakes and looks; a spurious wake only replays.
            conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.status == "waiting", r.lease_owner.is_(None))
                .values(wake_at=now)
            )
            self._notify(conn, f"input:{run_id}")
            pk = res.inserted_primary_key
            return int(pk[0]) if pk else 0

        return await self._write(_tx)

    async def next_input(self, run_id: str, name: str) -> Row[Any] | None:
        c = S.inputs.c
        q = (
            select(S.inputs)
            .where(c.run_id == run_id, c.name == name, c.consumed_seq.is_(None))
            .order_by(c.id)
            .limit(1)
        )

        def _tx(conn: Connection) -> Any:
            return (conn.execute(q)).first()

        return await self._read(_tx)

    async def inputs_of(self, run_id: str) -> list[Row[Any]]:
        q = select(S.inputs).where(S.inputs.c.run_id == run_id).order_by(S.inputs.c.id)

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    # ------------------------------------------------------------------ logs

    async def write_logs(self, rows: list[dict[str, Any]]) -> None:
        """Store log rows through the journal: the raw drivers, and in order with the rows that
        ride along with history writes. A row's ``line`` may hold several lines (see read_logs)."""
        if not rows:
            return
        await self.journal.submit(Op(run_id="", owner=None, attempt=None, logs=rows))

    async def read_logs(
        self, root_run_id: str, *, after_id: int = 0, limit: int = 5000
    ) -> list[journal_sql.LogLine]:
        """The run tree's log lines after row ``after_id``, in order: at least ``limit`` lines when
        that many are stored (whole rows, so a few more), fewer only at the end. A stored row may
        hold many lines (an exec's output is stored a chunk at a time); they come back one by one,
        with the row's id. Rows are read a page at a time, so memory stays bounded."""
        c = S.logs.c
        page = 100

        def _tx(conn: Connection) -> Any:
            out: list[journal_sql.LogLine] = []
            last = after_id
            while len(out) < limit:
                q = (
                    select(S.logs)
                    .where(c.root_run_id == root_run_id, c.id > last)
                    .order_by(c.id)
                    .limit(min(page, limit - len(out)))
                )
                rows = conn.execute(q).all()
                if not rows:
                    break
                out += journal_sql.log_lines(rows)
                last = rows[-1].id
            return out

        return await self._read(_tx)

    # ------------------------------------------------------------------ workers

    async def register_worker(self, row: dict[str, Any]) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(insert(S.workers).values(**row))

        return await self._write(_tx)

    async def stop_worker(self, worker_id: str, *, now: float) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(
                update(S.workers).where(S.workers.c.id == worker_id).values(stopped_at=now)
            )

        return await self._write(_tx)

    async def live_workers(self, *, now: float, stale_after: float) -> list[Row[Any]]:
        w = S.workers.c
        q = (
            select(S.workers)
            .where(w.stopped_at.is_(None), w.heartbeat_at >= now - stale_after)
            .order_by(w.started_at)
        )

        def _tx(conn: Connection) -> Any:
            return list((conn.execute(q)).all())

        return await self._read(_tx)

    async def workers_on_host(self, host: str) -> list[Row[Any]]:
        w = S.workers.c

        def _tx(conn: Connection) -> Any:
            return list(
                (
                    conn.execute(select(S.workers).where(w.host == host, w.stopped_at.is_(None)))
                ).all()
            )

        return await self._read(_tx)

    async def lease_holders(self, root_run_id: str) -> list[Row[Any]]:
        """The workers holding leases in the run tree ``root_run_id`` (by their worker rows)."""
        r, w = S.runs.c, S.workers.c
        held = select(r.lease_owner).where(r.root_run_id == root_run_id, r.lease_owner.is_not(None))
        q = select(S.workers).where(w.id.in_(held))

        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    async def get_worker(self, worker_id: str) -> Row[Any] | None:
        def _tx(conn: Connection) -> Any:
            return (conn.execute(select(S.workers).where(S.workers.c.id == worker_id))).first()

        return await self._read(_tx)

    async def held_counts(self) -> dict[str, int]:
        r = S.runs.c
        q = (
            select(r.lease_owner, func.count())
            .where(r.lease_owner.is_not(None))
            .group_by(r.lease_owner)
        )

        def _tx(conn: Connection) -> Any:
            return {str(o): int(n) for o, n in (conn.execute(q)).all()}

        return await self._read(_tx)

    # ------------------------------------------------------------------ holds

    async def hold(self, pipeline: str, version: str | None, *, now: float) -> None:
        def _tx(conn: Connection) -> Any:
            exists = (
                conn.execute(
                    select(S.holds.c.pipeline).where(
                        S.holds.c.pipeline == pipeline, S.holds.c.version == (version or "")
                    )
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(S.holds).values(pipeline=pipeline, version=version or "", created_at=now)
                )

        return await self._write(_tx)

    async def holds(self) -> list[Row[Any]]:
        def _tx(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(select(S.holds)).all())

        return await self._read(_tx)

    async def request_for_pipeline(
        self, pipeline: str, version: str | None, request: str, *, now: float
    ) -> int:
        """Ask every leased, unfinished run of a pipeline to ``request`` (e.g. hold)."""
        r = S.runs.c

        def _tx(conn: Connection) -> int:
            q = update(S.runs).where(
                r.pipeline == pipeline,
                r.status.in_(S.ACTIVE),
                r.lease_owner.is_not(None),
                r.requested.is_(None),
            )
            if version:
                q = q.where(r.version == version)
            res = conn.execute(q.values(requested=request, updated_at=now))
            self._notify(conn, "control")
            return int(res.rowcount)

        return await self._write(_tx)

    async def unhold(self, pipeline: str, version: str | None = None) -> int:
        """Release the holds of ``pipeline`` (only the hold of ``version`` when given)."""
        q = delete(S.holds).where(S.holds.c.pipeline == pipeline)
        if version is not None:
            q = q.where(S.holds.c.version == version)

        def _tx(conn: Connection) -> Any:
            res = conn.execute(q)
            self._notify(conn, "run")
            return int(res.rowcount)

        return await self._write(_tx)

    # ------------------------------------------------------------------ journal batch

    @property
    def commits_in_place(self) -> bool:
        """Whether :meth:`commit_now` can commit on the loop's thread (SQLite)."""
        return self._wx is not None

    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None:
        """SQLite only: apply ``ops`` on the loop's thread without waiting for a lock.

        None when that cannot be done at once (PostgreSQL, or another process holds the write
        lock): nothing was written, use :meth:`commit_ops`.
        """
        if self._wx is None:
            return None
        try:
            if journal_sql.simple(ops):
                return journal_sql.run_sqlite_simple(self._inline_conn(), ops)
            return journal_sql.run_sqlite(self._inline_conn(), ops)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            return None

    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]:
        """Apply many runs' ops in one transaction. Each op is checked against its lease."""
        if self._wx is not None:
            # On the loop's thread, without waiting for a lock: saves a thread hop per batch.
            done = self.commit_now(ops)
            if done is not None:
                return done
            # Another process holds the write lock: wait for it in the writer thread instead.
            return await asyncio.get_running_loop().run_in_executor(
                self._wx, self._commit_sqlite, ops
            )
        conn = await self._journal_pg()
        try:
            if journal_sql.simple(ops):
                return await journal_sql.run_pg_simple(conn, ops)
            return await journal_sql.run_pg(conn, ops)
        except BaseException as exc:
            if not _pg_statement_error(exc):
                self._apg = None
                with contextlib.suppress(Exception):
                    conn.terminate()
            raise

    def _raw_sqlite(self, busy_ms: int) -> sqlite3.Connection:
        assert self.url.path is not None
        conn = sqlite3.connect(
            self.url.path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={_sqlite_synchronous()}")
            conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if (bad := self._bad_database(exc)) is not None:
                raise bad from exc
            raise
        return conn

    def _inline_conn(self) -> sqlite3.Connection:
        if self._iconn is None:
            self._iconn = self._raw_sqlite(0)
        return self._iconn

    def _commit_sqlite(self, ops: list[Op]) -> list[BaseException | None]:
        # Runs in the writer thread only, where waiting for another process's lock is fine.
        if self._jconn is None:
            self._jconn = self._raw_sqlite(self._busy_ms)
        return journal_sql.run_sqlite(self._jconn, ops)

    async def _journal_pg(self) -> Any:
        if self._apg is None or self._apg.is_closed():
            import asyncpg

            try:
                self._apg = await asyncpg.connect(
                    self.plain_pg_dsn(),
                    timeout=10,
                    command_timeout=self._pg_limits[0],
                    server_settings={"application_name": "durapipe-journal", **self._pg_limits[1]},
                )
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                if (bad := self._bad_database(exc)) is not None:
                    raise bad from exc
                raise self._unavailable(exc) from exc
        return self._apg

    def plain_pg_dsn(self) -> str:
        return "postgresql://" + self.url.sqlalchemy.split("://", 1)[1]

    def _notify(self, conn: Connection, payload: str) -> None:
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})

    # ------------------------------------------------------------------ gc

    async def gc(self, *, older_than: float) -> int:
        r = S.runs.c

        def _tx(conn: Connection) -> Any:
            ids = [
                x
                for (x,) in (
                    conn.execute(
                        select(r.id).where(
                            r.status.in_(list(S.TERMINAL)), r.finished_at < older_than
                        )
                    )
                ).all()
            ]
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                conn.execute(delete(S.events).where(S.events.c.run_id.in_(part)))
                conn.execute(delete(S.inputs).where(S.inputs.c.run_id.in_(part)))
                conn.execute(delete(S.logs).where(S.logs.c.run_id.in_(part)))
                conn.execute(delete(S.runs).where(r.id.in_(part)))
            return len(ids)

        return await self._write(_tx)


def _pg_statement_error(exc: BaseException) -> bool:
    """An error of one statement (the connection is still good), not of the connection."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError
    )


def _sync_tx(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _is_busy(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def _sqlite_events(engine: Engine, begin: str, synchronous: str, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


_FAST = os.environ.get("DURAPIPE_NO_INLINE_COMMIT") is None  # for A/B timing (bench/README.md)


class Journal:
    """Group commit: the pending ops of every run in this process share one transaction.

    A caller's ``submit`` returns once its op is durable (or raises LeaseLost). Connection
    failures are retried with backoff, so a database restart pauses runs instead of failing them.
    """

    def __init__(self, store: Store, *, max_batch: int = 500) -> None:
        self._store = store
        self._pending: list[Op] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._max_batch = max_batch
        self.retry_for = _config.db_retry_seconds()
        self.batches = 0
        self.ops = 0
        self._committing = False
        self.take_logs: Callable[[], list[dict[str, Any]]] | None = None
        self.requeue_logs: Callable[[list[dict[str, Any]]], None] | None = None

    async def submit(self, op: Op) -> None:
        loop = asyncio.get_running_loop()
        op.future = loop.create_future()
        if (
            _FAST
            and self._store.commits_in_place
            and not self._pending
            and not self._committing
            and not getattr(loop, "_ready", True)
        ):
            # Nothing else is ready to run on this loop, so nobody could join this op's batch
            # before it commits: on SQLite, commit it here, skipping the two loop iterations a
            # hand-off to the journal task costs (a run stepping alone: `durapipe run`).
            batch = self._batch([op])
            try:
                results = self._store.commit_now(batch)
            except Exception:
                results = None  # the journal task's path retries, isolates and reports it
            if results is not None:
                self._settle(batch, results)
                await op.future  # done: returns (or raises) without yielding to the loop
                return
            if len(batch) > 1 and self.requeue_logs is not None:
                self.requeue_logs(batch[-1].logs)
        self._pending.append(op)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="durapipe-journal")
        assert self._wake is not None
        self._wake.set()
        await op.future

    async def flush_logs(self) -> None:
        """Store the log lines buffered so far (they ride along with an empty op); never raises:
        rows that could not be stored go back to the buffer for the next write."""
        try:
            await self.submit(Op(run_id="", owner=None, attempt=None))
        except Exception as exc:
            log.debug("log flush failed: %s", exc)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
                # Rows given to write_logs are older than the ones buffered now: none is left
                # behind for the next batch, so they get the lower ids.
                if any(op.logs for op in self._pending):
                    batch += [op for op in self._pending if op.logs]
                    self._pending = [op for op in self._pending if not op.logs]
                self._committing = True
                try:
                    await self._commit(self._batch(batch))
                finally:
                    self._committing = False

    def _batch(self, ops: list[Op]) -> list[Op]:
        """``ops`` and the log lines written so far, which ride along: a line printed before a
        step completed is as durable as the step (no commit of its own on the hot path)."""
        rows = self.take_logs() if self.take_logs is not None else []
        if rows:
            ops.append(Op(run_id="", owner=None, attempt=None, logs=rows))
        return ops

    async def _commit(self, batch: list[Op]) -> None:
        delay = 0.05
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                results = await self._store.commit_ops(batch)
                self._store.note_locked(False)
                break
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if _is_integrity(exc):
                    if len(batch) == 1:
                        results = [exc]
                        break
                    for op in batch:  # isolate the op at fault; the others still commit
                        await self._commit([op])
                    return
                if not _is_retryable(exc) or time.monotonic() > deadline:
                    if (bad := self._store._bad_database(exc)) is not None:
                        exc = bad  # a read-only file: one line saying so, not the driver's error
                    elif self._store.is_sqlite and _is_busy(exc):
                        exc = self._store._locked_out(exc)
                    results = [exc] * len(batch)
                    break
                if self._store.is_sqlite and _is_busy(exc):
                    self._store.note_locked(True)  # one line for the whole wait, not one a retry
                else:
                    log.warning(
                        "database write failed (%s: %s); retrying in %.2fs",
                        type(exc).__name__,
                        redact(str(exc)),
                        delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._settle(batch, results)

    def _settle(self, batch: list[Op], results: list[BaseException | None]) -> None:
        self.batches += 1
        self.ops += len(batch)
        for op, res in zip(batch, results, strict=True):
            # Rows that rode along go back to the buffer; write_logs' caller gets the error.
            if op.logs and res is not None and op.future is None and self.requeue_logs is not None:
                self.requeue_logs(op.logs)
            fut = op.future
            if fut is None or fut.done():
                continue
            if res is None:
                fut.set_result(None)
            else:
                fut.set_exception(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None


async def open_store(url: str | None = None, *, migrate: bool | None = None) -> Store:
    """Open the database at ``url`` (or DURAPIPE_DATABASE_URL, or ./durapipe.db) as a Store.

    An embedded SQLite database is migrated on first use; PostgreSQL must be migrated with
    ``durapipe db upgrade`` (``migrate=True`` does it here; ``migrate=False`` skips the check).

    Raises:
        ConfigError: the URL is unusable, or the database is not migrated.
        DatabaseUnavailable: the database cannot be reached.
    """
    store = Store(resolve_url(url))
    try:
        if migrate is not False:
            await store.ensure_schema(auto_migrate=bool(migrate))
    except BaseException:
        await store.close()
        raise
    return store


def now() -> float:
    return time.time()
