"""What SQLite and PostgreSQL do differently, behind one interface (``sqlite.py``, ``postgres.py``).

The rest of the store is written once against :class:`Dialect`: run a transaction, lock rows,
commit a journal batch on the raw driver, tell other processes something changed, and hear it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from .journal import Op
from .url import DatabaseURL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

# What changed, as a wake-up says it: "run" (a run became runnable or finished), "control" (a
# stop, cancel or hold was asked of leased runs), "input:<run id>" (an input arrived for it).
OnChange = Callable[[str], None]


class Dialect(ABC):
    """One database's engine, connections and the statements only it has."""

    is_sqlite: bool

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url

    @abstractmethod
    async def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """``fn(conn)`` in one transaction (a write transaction when ``write``); the driver's
        errors are raised as they come (the store classifies them)."""

    @abstractmethod
    def async_writer(self) -> AsyncEngine:
        """An async engine whose write transactions an ``async def`` @dp.transaction runs in
        (its body gets the engine's AsyncConnection)."""

    def lock(self, q: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        """``q`` locking the rows it reads until the transaction ends (SQLite's write
        transaction locks the whole database already: nothing to add)."""
        return q

    def notify(self, conn: Connection, payload: str) -> None:  # noqa: B027  # SQLite: nothing
        """Tell other processes, when ``conn``'s transaction commits, what changed."""

    async def vacuum(self, tables: Sequence[str]) -> None:  # noqa: B027  # SQLite: nothing
        """Clean up after many deleted rows (gc), gently (PostgreSQL: VACUUM)."""

    @property
    @abstractmethod
    def commits_in_place(self) -> bool:
        """Whether :meth:`commit_now` can commit on the loop's thread."""

    @abstractmethod
    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None:
        """Apply ``ops`` on the loop's thread without waiting for a lock; None when that cannot
        be done at once (nothing was written: use :meth:`commit_ops`)."""

    @abstractmethod
    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]:
        """Apply many runs' ops in one transaction; each op is checked against its lease."""

    @property
    def awaits_in_place(self) -> bool:
        """Whether a caller may await :meth:`commit_ops` for its own op from its own task
        (PostgreSQL: a round trip on the journal's connection, no thread)."""
        return False

    def can_append_now(self, op: Op) -> bool:
        """Whether :meth:`append_now` takes ``op`` (events only, under a lease)."""
        return False

    async def append_now(self, op: Op) -> BaseException | None:
        """Append ``op``'s events in one fenced statement, committed on its own: None, or
        LeaseLost when the lease moved on (raises what the driver raises)."""
        raise NotImplementedError

    async def recorded(self, run_id: str, seq: int) -> bool:
        """Whether the event ``seq`` of ``run_id`` is in the history (the journal settles a
        commit whose outcome it did not see)."""
        raise NotImplementedError

    @abstractmethod
    async def watch(
        self,
        on_change: OnChange,
        *,
        on_listening: Callable[[], None] | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """Call ``on_change(payload)`` when another connection commits a change, until
        ``until`` is set (or the task is cancelled). ``on_listening`` is called each time the
        watch (re)starts listening: what was sent while it was not is lost, so look again."""

    @abstractmethod
    async def close(self) -> None: ...
