"""``@dp.transaction``: a step's own statements and its completion event, in one transaction.

The user's statements run on a connection of the durapipe database; before the transaction
commits, the run's lease is checked (the run's row locked on PostgreSQL; SQLite's write
transaction holds the whole file) and the step's completion event is inserted. So the step's
changes and its checkpoint commit together or not at all, and a process that lost its lease
commits neither. A serialization failure or a deadlock runs the whole transaction again; a
connection lost while committing is settled by looking for the event before running it again.

Where the body runs: a plain ``def`` on SQLite in the writer thread (the store's own
transaction); an ``async def`` on SQLite on the loop, with an AsyncConnection of the aiosqlite
engine on the same file (BEGIN IMMEDIATE: the write lock first); on PostgreSQL on the async
engine, an ``async def`` with its AsyncConnection, a plain ``def`` through ``run_sync``. The
lease check and the event insert are the same code (:func:`_commit_event`) on all four.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection as Connection  # what a sync body gets (re-exported)
from sqlalchemy.exc import DBAPIError

from ..errors import DatabaseUnavailable, LeaseLost
from . import errors
from . import schema as S
from .base import StoreBase

if TYPE_CHECKING:  # what an async body gets (the import pulls in the ORM: only for types)
    from sqlalchemy.ext.asyncio import AsyncConnection as AsyncConnection

# How many times a transaction refused for a conflict (serialization failure, deadlock) is run
# again, and the first pause between two runs (doubled each time).
CONFLICT_RETRIES = 20
CONFLICT_DELAY = 0.005

# body(conn) runs the user's statements and returns the completion event's data (JSON text).
SyncBody = Callable[[Connection], str]
AsyncBody = Callable[[Any], Awaitable[str]]  # takes an AsyncConnection


class Transactions(StoreBase):
    """A transaction step's statements and its completion, fenced by the run's lease."""

    async def run_transaction(
        self,
        *,
        run_id: str,
        owner: str,
        attempt: int,
        event: dict[str, Any],
        body: SyncBody | AsyncBody,
        is_async: bool,
        label: str,
        earlier: list[dict[str, Any]] | None = None,
    ) -> str:
        """Run ``body`` and insert ``event`` (its ``data`` being what ``body`` returned), after
        the run's ``earlier`` events, in one transaction, if the run is still leased to
        ``owner`` at ``attempt``. -> the data.

        Raises LeaseLost (nothing committed) when the lease is not the caller's; what ``body``
        raised (nothing committed); DatabaseUnavailable when the database stayed away.
        """
        fence = (run_id, owner, attempt)
        before = earlier or []
        delay, tries = CONFLICT_DELAY, 0
        deadline = time.monotonic() + self.journal.retry_for
        unsure = False  # a connection went while committing: the commit may have happened
        while True:
            if unsure:
                done = await self._recorded(event)
                if done is not None:
                    return done
            try:
                if self.is_sqlite and not is_async:  # the writer thread (waits out locks)
                    return await self._write(
                        lambda conn: _sync_tx(conn, body, before, event, fence)  # type: ignore[arg-type]
                    )
                data = await self._async_tx(body, is_async, before, event, fence)
                if self.is_sqlite:
                    self.note_locked(False)
                return data
            except (DBAPIError, DatabaseUnavailable, OSError) as exc:
                if errors.is_conflict(exc) and tries < CONFLICT_RETRIES:
                    tries += 1
                elif is_async and self.is_sqlite and errors.is_locked(exc):
                    # aiosqlite's BEGIN IMMEDIATE waited its busy timeout for another
                    # connection's write lock: as the writer thread's transactions do, again
                    # until DURAPIPE_DB_RETRY_SECONDS.
                    if time.monotonic() > deadline:
                        raise errors.locked_out(self.url, self.journal.retry_for, exc) from exc
                    self.note_locked(True)
                elif errors.is_transient(exc) and time.monotonic() < deadline:
                    unsure = True
                else:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _async_tx(
        self,
        body: SyncBody | AsyncBody,
        is_async: bool,
        before: list[dict[str, Any]],
        event: dict[str, Any],
        fence: tuple[str, str, int],
    ) -> str:
        """The transaction on the dialect's async engine (on SQLite, for an ``async def`` body
        only: a plain ``def`` runs in the writer thread)."""
        engine = self.db.async_writer()
        try:
            async with engine.begin() as conn:
                if is_async:
                    data = await cast(AsyncBody, body)(conn)
                else:
                    data = await conn.run_sync(cast(SyncBody, body))
                await conn.run_sync(_commit_event, before, event, data, fence)
                return str(data)
        except (OSError, ConnectionError) as exc:
            raise errors.unavailable(self.url, exc) from exc

    async def _recorded(self, event: dict[str, Any]) -> str | None:
        """The data of ``event`` if it was committed (a commit whose answer was lost)."""

        def tx(conn: Connection) -> str | None:
            row = conn.execute(
                select(S.events.c.data).where(
                    S.events.c.run_id == event["run_id"],
                    S.events.c.seq == event["seq"],
                    S.events.c.kind == event["kind"],
                    S.events.c.step == event["step"],
                )
            ).first()
            return None if row is None else str(row[0])

        try:
            return await self._read(tx)
        except (DBAPIError, DatabaseUnavailable, OSError):
            return None  # still away: the loop tries again


def _sync_tx(
    conn: Connection,
    body: SyncBody,
    before: list[dict[str, Any]],
    event: dict[str, Any],
    fence: tuple[str, str, int],
) -> str:
    data = body(conn)
    _commit_event(conn, before, event, data, fence)
    return data


def _commit_event(
    conn: Connection,
    before: list[dict[str, Any]],
    event: dict[str, Any],
    data: str,
    fence: tuple[str, str, int],
) -> None:
    """Check the lease (locking the run's row until the commit) and insert the events."""
    run_id, owner, attempt = fence
    q = select(S.runs.c.lease_owner, S.runs.c.attempt).where(S.runs.c.id == run_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None or (row[0], row[1]) != (owner, attempt):
        raise LeaseLost(f"run {run_id}: lease lost")
    conn.execute(insert(S.events), [*before, {**event, "data": data}])
