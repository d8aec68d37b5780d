"""What a database error means, decided in one place, and the one-line errors users read.

Every driver error is classified by the code the database gives it, never by the Python type's
name or the message's text: the SQLSTATE on PostgreSQL (asyncpg's ``.sqlstate``, also on
SQLAlchemy's adapted errors), SQLite's result code on SQLite (``sqlite3.Error.sqlite_errorcode``).
The one exception is SQLite's "no such table", which has no code of its own (plain SQLITE_ERROR).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy.exc import DBAPIError

from ..errors import ConfigError, DatabaseUnavailable
from .url import DatabaseURL, pg_database_name, redact


class Fault(StrEnum):
    """What went wrong, as far as what to do next is concerned."""

    BAD_DATABASE = "bad_database"  # the URL names nothing this user can use: no retry helps
    INTEGRITY = "integrity"  # a constraint refused the write (e.g. a run id that exists)
    UNDEFINED_TABLE = "undefined_table"  # the database has no durapipe tables (not migrated)
    LOCKED = "locked"  # SQLite: another connection holds the write lock; wait for it
    UNREACHABLE = "unreachable"  # the server or the connection is not there right now
    FILE = "file"  # SQLite could not read or write the file just now (I/O error, disk full...)
    # PostgreSQL ended a transaction so that another could go on (a serialization failure, a
    # deadlock): doing it again from the start succeeds (a @dp.transaction step is retried).
    CONFLICT = "conflict"


# The order in which faults found along an error's chain win: a bad database says more than the
# lost connection it caused, a busy SQLite file more than the wrapper around it.
_PRECEDENCE = tuple(Fault)

# SQLSTATEs. "This URL names nothing this user can use", which no retry changes: 3D000 the
# database does not exist, 28000/28P01 the role is unknown or the password wrong (or pg_hba.conf
# turns the connection away), 42501 the role may not connect (no CONNECT privilege).
_PG_BAD_DATABASE = ("3D000", "28000", "28P01", "42501")
# "The server is not there right now", not "your statement is wrong": class 08 (connection
# exception), 57P01-57P03 (admin/crash shutdown, cannot connect now), 53300 (too many connections).
_PG_UNREACHABLE = ("08", "57P01", "57P02", "57P03", "53300")
_PG_INTEGRITY = "23"  # class 23: integrity constraint violation
_PG_UNDEFINED_TABLE = "42P01"
_PG_CONFLICT = ("40001", "40P01")  # serialization_failure, deadlock_detected

# SQLite primary result codes (the low byte of the extended code).
_SQLITE_BUSY = 5
_SQLITE_CONSTRAINT = 19
# A file that is not a SQLite database (NOTADB), or that this user may not write (READONLY) or
# open (CANTOPEN).
_SQLITE_NOTADB = 26
_SQLITE_UNUSABLE = (8, 14)  # READONLY, CANTOPEN
# Codes of a moment's trouble with the file, which the journal retries: PERM, ABORT, LOCKED,
# INTERRUPT, IOERR, FULL, PROTOCOL, EMPTY, SCHEMA.
_SQLITE_FILE = (3, 4, 6, 9, 10, 13, 15, 16, 17)


def chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it was raised from (DBAPI ``orig``, then ``__cause__``)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "orig", None) or e.__cause__


def sqlstate(e: BaseException) -> str | None:
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    return state if isinstance(state, str) else None


def _sqlite_code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None) if isinstance(e, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None


def _asyncpg_client_error(e: BaseException) -> bool:
    """asyncpg's own errors about the connection (closed, in use, protocol), not a bad
    argument (its DataError and ClientConfigurationError are ValueErrors)."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(
        e, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError
    ) and not isinstance(e, ValueError)


def _fault_of(e: BaseException) -> Fault | None:
    """What this one link of an error's chain says, by its code."""
    if (state := sqlstate(e)) is not None:
        if state in _PG_BAD_DATABASE:
            return Fault.BAD_DATABASE
        if state.startswith(_PG_INTEGRITY):
            return Fault.INTEGRITY
        if state == _PG_UNDEFINED_TABLE:
            return Fault.UNDEFINED_TABLE
        if state.startswith(_PG_UNREACHABLE):
            return Fault.UNREACHABLE
        if state in _PG_CONFLICT:
            return Fault.CONFLICT
        return None  # the server answered: the statement is at fault, not the connection
    if (code := _sqlite_code(e)) is not None:
        if code == _SQLITE_NOTADB or code in _SQLITE_UNUSABLE:
            return Fault.BAD_DATABASE
        if code == _SQLITE_CONSTRAINT:
            return Fault.INTEGRITY
        if code == _SQLITE_BUSY:
            return Fault.LOCKED
        if code in _SQLITE_FILE:
            return Fault.FILE
        if "no such table" in str(e):  # SQLITE_ERROR, which has no finer code for it
            return Fault.UNDEFINED_TABLE
        return None
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return Fault.UNREACHABLE
    if isinstance(e, DatabaseUnavailable | OSError | ConnectionError) or _asyncpg_client_error(e):
        return Fault.UNREACHABLE  # OSError covers TimeoutError (a statement or connect timeout)
    return None


def classify(exc: BaseException) -> Fault | None:
    """What ``exc`` (or anything it was raised from) means; None for an error of the statement
    or of the code (the connection is fine, and repeating it would fail the same way)."""
    found = {f for e in chain(exc) if (f := _fault_of(e)) is not None}
    return next((f for f in _PRECEDENCE if f in found), None)


def culprit(exc: BaseException, fault: Fault) -> BaseException | None:
    """The error in ``exc``'s chain that says ``fault`` (its message is the detail users read)."""
    return next((e for e in chain(exc) if _fault_of(e) is fault), None)


def is_integrity(exc: BaseException) -> bool:
    return classify(exc) is Fault.INTEGRITY


def is_locked(exc: BaseException) -> bool:
    """SQLite's write lock is held by another connection (SQLITE_BUSY)."""
    return classify(exc) is Fault.LOCKED


def is_undefined_table(exc: BaseException) -> bool:
    return classify(exc) is Fault.UNDEFINED_TABLE


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable right now (waiting may help)."""
    return classify(exc) is Fault.UNREACHABLE


def is_conflict(exc: BaseException) -> bool:
    """A serialization failure or a deadlock: the transaction, run again from its start, may
    well succeed."""
    return classify(exc) is Fault.CONFLICT


def is_retryable(exc: BaseException) -> bool:
    """Whether the journal should write the batch again after a pause: the server or the file
    is away for a moment, or another process holds SQLite's write lock."""
    if isinstance(exc, ConfigError):
        return False
    return classify(exc) in (Fault.UNREACHABLE, Fault.LOCKED, Fault.FILE)


def is_statement_error(exc: BaseException) -> bool:
    """PostgreSQL answered ``exc`` about a statement: its connection is still good to use."""
    return any(sqlstate(e) is not None for e in chain(exc)) and classify(exc) not in (
        Fault.UNREACHABLE,
        Fault.BAD_DATABASE,
    )


# ---------------------------------------------------------------------- what users read

_WHERE = "--database-url / DURAPIPE_DATABASE_URL"


def _first_line(e: BaseException) -> str:
    return redact((str(e).strip().splitlines() or [type(e).__name__])[0])


def bad_database(url: DatabaseURL, exc: BaseException) -> ConfigError | None:
    """A one-line error for a URL naming no database this user can use, or None.

    Not a :class:`DatabaseUnavailable`: waiting does not fix a missing database or a wrong
    password, so workers must not retry it.
    """
    cause = culprit(exc, Fault.BAD_DATABASE)
    if cause is None:
        return None
    detail = _first_line(cause)
    if url.dialect == "sqlite" and _sqlite_code(cause) in _SQLITE_UNUSABLE:
        return ConfigError(
            f"cannot write the SQLite database {url.path} ({detail}); give this user "
            f"write access to it and to its folder, or point {_WHERE} at a writable file"
        )
    if url.dialect == "sqlite":
        return ConfigError(
            f"{url.path} is not a SQLite database ({detail}); point {_WHERE} at a "
            "durapipe database, or at a file that does not exist yet to create one"
        )
    shown = redact(url.raw)
    state = sqlstate(cause)
    if state == "3D000":
        name = pg_database_name(url.raw)
        quoted = name.replace('"', '""')
        create = f'create it (CREATE DATABASE "{quoted}")' if name else "create it"
        return ConfigError(
            f"the database {shown} does not exist ({detail}); {create} and run "
            f"`durapipe db upgrade`, or point {_WHERE} at an existing database"
        )
    if state == "42501":
        grant = "GRANT CONNECT" if "for database" in detail else "GRANT the privileges"
        return ConfigError(
            f"the database {shown} refused this user ({detail}); {grant} to it, or give "
            f"another user in {_WHERE}"
        )
    return ConfigError(
        f"cannot log in to the database {shown} ({detail}); check the user and password in {_WHERE}"
    )


def unavailable(url: DatabaseURL, exc: BaseException) -> DatabaseUnavailable:
    detail = redact(
        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if str(exc).strip()
        else type(exc).__name__
    )
    return DatabaseUnavailable(
        f"cannot reach the database {redact(url.raw)}: {detail}. "
        "Check --database-url / DURAPIPE_DATABASE_URL and that the server is up"
    )


def pool_exhausted(url: DatabaseURL, exc: BaseException) -> DatabaseUnavailable:
    """No pooled connection became free in time: this process has too much in flight."""
    detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return DatabaseUnavailable(
        f"no connection to the database {redact(url.raw)} became free in time ({detail}); "
        "it is retried: this process has more in flight than its connections"
    )


def locked_out(url: DatabaseURL, retry_for: float, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"the database {url.path} stayed locked by another process for "
        f"{retry_for:g}s ({redact(str(getattr(exc, 'orig', None) or exc))}); "
        "it is retried again later (DURAPIPE_DB_RETRY_SECONDS)"
    )
