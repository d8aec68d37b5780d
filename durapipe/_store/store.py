"""The Store: the one object the rest of durapipe calls for anything in the database.

Each concern's queries live in a module of their own (``runs``, ``claims``, ``control``,
``workers``), the plumbing in ``base``, what differs between SQLite and PostgreSQL in ``sqlite``
and ``postgres``; :class:`Store` puts them together behind one set of methods.
"""

from __future__ import annotations

from .base import SCHEMA_REVISION
from .chains import Chains
from .claims import Claimed, ClaimFilter, Claims
from .control import Control
from .forks import Forks
from .journal import Journal, Op
from .messages import Messages
from .pages import Pages
from .queues import QueueLimits, Queues
from .recoveries import Recoveries
from .runs import Runs
from .schedules import Schedules
from .timers import DueTimers
from .transactions import Transactions
from .url import resolve_url
from .workers import Workers

# Other modules import these from here.
__all__ = [
    "SCHEMA_REVISION",
    "ClaimFilter",
    "Claimed",
    "Journal",
    "Op",
    "QueueLimits",
    "Store",
    "open_store",
]


class Store(
    Runs,
    DueTimers,
    Claims,
    Control,
    Workers,
    Messages,
    Chains,
    Recoveries,
    Forks,
    Pages,
    Transactions,
    Schedules,
    Queues,
):
    """An open durapipe database (``dp.Store``): hand it to ``dp.Client`` and the testing kit.

    Open one with ``await dp.open_store(url)`` (the pytest fixture ``durapipe_store`` is one)
    and close it with ``await store.close()``. Its other methods are internal, not public API.

    Internals: all SQL. Each public method is one short transaction.

    SQLite is driven through the synchronous driver in a dedicated writer thread (and a small
    reader pool), so a whole transaction costs one hop between threads instead of one per
    statement. PostgreSQL uses SQLAlchemy's async engine on asyncpg; the same transaction
    functions run on it through ``run_sync``.
    """


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
