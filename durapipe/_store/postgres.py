"""PostgreSQL: the async engine on asyncpg, the journal's commit on asyncpg, LISTEN/NOTIFY.

SQLAlchemy's async engine runs the short transactions; the journal keeps one asyncpg connection
of its own and commits a batch in one round trip on the hot path. Wake-ups are NOTIFYs on
:data:`NOTIFY_CHANNEL`, sent in the transaction that makes the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from .. import _config
from ..errors import LeaseLost
from . import errors, journal_sql
from .dialect import Dialect, OnChange, T
from .journal import Op
from .journal_sql import EVENT_COLS, ROW_COLS
from .url import DatabaseURL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("durapipe.store")

NOTIFY_CHANNEL = "durapipe"  # the one channel every wake-up goes through
# The LISTEN connection: how long to wait before connecting again after a failure, and how
# often an idle one is checked (a dead connection hears nothing and says nothing).
LISTEN_RETRY = 2.0
LISTEN_PING = 5.0


def timeouts() -> tuple[float, dict[str, str]]:
    """How long one statement may take on PostgreSQL, and the server setting that ends a session
    idle inside a transaction after as long (DURAPIPE_DB_TIMEOUT, seconds, default 30).

    Without them a connection the network dropped without a word (a NAT or firewall forgetting
    it, a failover moving the address) hangs its worker forever, and a transaction cut off
    between its UPDATE and COMMIT keeps the run's row locked so no other worker can take over
    (tests/acceptance/test_partition.py).
    """
    timeout = _config.db_timeout()
    return timeout, {"idle_in_transaction_session_timeout": str(int(timeout * 1000))}


def plain_dsn(url: DatabaseURL) -> str:
    """The URL as asyncpg reads it (``postgresql://...``)."""
    return "postgresql://" + url.sqlalchemy.split("://", 1)[1]


class PostgreSQL(Dialect):
    is_sqlite = False

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__(url)
        # Imported here: sqlalchemy.ext.asyncio pulls in the ORM, which SQLite never needs.
        from sqlalchemy.ext.asyncio import create_async_engine

        self._limits = timeout, server = timeouts()
        import asyncpg

        dsn = self.dsn = plain_dsn(url)
        # Planned at each execution, with the tables' sizes of that moment. asyncpg prepares
        # every statement, and after five executions PostgreSQL may keep one generic plan for
        # it until the table is next analyzed: planned while a new database's tables were
        # near empty, a claim or a history read then scanned whole tables seconds later
        # (bench/wake.py: 28 ms per history read of a batch, 10,000 runs waking late). These
        # statements are not the per-step path; planning them costs nothing measurable there.
        settings = {
            "application_name": "durapipe",
            "plan_cache_mode": "force_custom_plan",
            **server,
        }

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
        self._apg: Any = None  # the journal's asyncpg connection
        # The journal's statements are timed by one watchdog instead of a timer per statement
        # (asyncpg's command_timeout arms and cancels one for every call: a few µs a step):
        # when the statement in flight has taken longer than DURAPIPE_DB_TIMEOUT, its
        # connection is closed, and the write fails over to a new one as after a lost network.
        self._inflight: float | None = None  # loop time the statement in flight was sent
        self._watchdog: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        async with self.writer.begin() if write else self.writer.connect() as conn:
            return await conn.run_sync(fn)

    def async_writer(self) -> AsyncEngine:
        return self.writer

    def lock(self, q: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        return q.with_for_update(skip_locked=skip_locked)

    def notify(self, conn: Connection, payload: str) -> None:
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})

    # ------------------------------------------------------------------ journal batch

    @property
    def commits_in_place(self) -> bool:
        return False

    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None:
        return None

    @property
    def awaits_in_place(self) -> bool:
        return True

    def can_append_now(self, op: Op) -> bool:
        return len(op.events) <= _ONE_RUN_MAX and journal_sql.simple_op(op)

    async def append_now(self, op: Op) -> BaseException | None:
        conn = self._apg
        if conn is None or conn.is_closed():
            conn = await self._journal_conn()
        # As _statement(), written out: this is every step's path.
        self._inflight = asyncio.get_running_loop().time()
        try:
            return await append_one(conn, op)
        except BaseException as exc:
            self._drop_unless_statement(conn, exc)
            raise
        finally:
            self._inflight = None

    async def recorded(self, run_id: str, seq: int) -> bool:
        conn = await self._journal_conn()
        with self._statement(conn):
            found = await conn.fetchval(
                "SELECT 1 FROM durapipe_events WHERE run_id = $1 AND seq = $2", run_id, seq
            )
        return found is not None

    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]:
        conn = await self._journal_conn()
        with self._statement(conn):
            if journal_sql.simple(ops):
                return await run_simple(conn, ops)
            return await run(conn, ops)

    @contextlib.contextmanager
    def _statement(self, conn: Any) -> Iterator[None]:
        """Around the journal connection's statements: timed by the watchdog, and the
        connection dropped after a failure that is not the statement's own."""
        self._inflight = asyncio.get_running_loop().time()
        try:
            yield
        except BaseException as exc:
            self._drop_unless_statement(conn, exc)
            raise
        finally:
            self._inflight = None

    def _drop_unless_statement(self, conn: Any, exc: BaseException) -> None:
        """After a failure that is not the statement's own (a lost connection, a timeout), the
        journal's connection is not used again: the next write opens a new one."""
        if not errors.is_statement_error(exc) and not isinstance(exc, asyncio.CancelledError):
            self._apg = None
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _journal_conn(self) -> Any:
        if self._apg is None or self._apg.is_closed():
            import asyncpg

            try:
                self._apg = await asyncpg.connect(
                    self.dsn,
                    timeout=10,
                    server_settings={
                        "application_name": "durapipe-journal",
                        # Every statement of the journal finds rows by key (a run's id, its
                        # inputs, messages). Their plans are kept for the connection's life,
                        # so one made while a table was near empty (a new database) would
                        # scan it whole once it is large (the lease check of a batch took
                        # 8 ms with 10,000 runs): never prefer a scan where a key's index
                        # serves. (Planning each execution instead costs ~45 µs a step.)
                        "enable_seqscan": "off",
                        **self._limits[1],
                    },
                )
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                if (bad := errors.bad_database(self.url, exc)) is not None:
                    raise bad from exc
                raise errors.unavailable(self.url, exc) from exc
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = asyncio.get_running_loop().create_task(
                    self._watch_journal(), name="durapipe-journal-watchdog"
                )
        return self._apg

    async def _watch_journal(self) -> None:
        """Close the journal's connection under a statement that outlived the timeout (a
        network that dropped it without a word): the awaiting write then fails and is retried
        on a new connection, as with a per-statement timeout."""
        limit = self._limits[0]
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            since, conn = self._inflight, self._apg
            if since is not None and conn is not None and loop.time() - since > limit:
                log.warning("a database write took over %.0f s: reconnecting", limit)
                self._apg = None
                with contextlib.suppress(Exception):
                    conn.terminate()

    # ------------------------------------------------------------------ wake-ups

    async def watch(
        self,
        on_change: OnChange,
        *,
        on_listening: Callable[[], None] | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """LISTEN on a connection of its own; connect again whenever the server goes."""
        import asyncpg

        stop = until if until is not None else asyncio.Event()

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            on_change(payload)

        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
            except Exception as exc:
                log.debug("LISTEN connection failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LISTEN_RETRY)
                continue
            try:
                await conn.add_listener(NOTIFY_CHANNEL, heard)
                if on_listening is not None:
                    on_listening()  # anything sent while we were not listening
                while not stop.is_set() and not conn.is_closed():
                    try:
                        await asyncio.wait_for(stop.wait(), LISTEN_PING)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=5)
            except Exception as exc:
                log.debug("LISTEN connection lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    async def vacuum(self, tables: Sequence[str]) -> None:
        """VACUUM ``tables`` at autovacuum's pace, handing what it writes to the disk as it goes.

        gc calls it after deleting a tenth of the runs, so that autovacuum does not: an
        autovacuum worker writes the pages it cleans without ``backend_flush_after`` (the
        server's default is 0), Linux keeps them dirty up to a tenth of the memory, and the
        next checkpoint's fsync then flushes hundreds of MB at once while every commit's WAL
        flush waits behind it (bench/README.md, "PostgreSQL's gc stall"). A table this role
        does not own is skipped with PostgreSQL's warning; a failure is logged, not raised:
        the runs are deleted either way, and autovacuum cleans up after them.
        """
        import asyncpg

        settings = {
            "application_name": "durapipe gc",
            "vacuum_cost_delay": "2ms",  # autovacuum's pace; a manual VACUUM has no pause
            "backend_flush_after": "256kB",
        }
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10, server_settings=settings)
            try:
                for table in tables:  # not truncating: that locks out every reader a while
                    await conn.execute(f"VACUUM (TRUNCATE false) {table}")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("gc: VACUUM did not run (%s); autovacuum will clean up", exc)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(BaseException):
                await self._watchdog
            self._watchdog = None
        if self._apg is not None:
            with contextlib.suppress(Exception):
                await self._apg.close()
            self._apg = None
        await self.writer.dispose()


# ---------------------------------------------------------------------- the journal on asyncpg

# The plan's ("notify", payload) commands: constant statements (no parameters, one round trip).
_NOTIFY = {"run": f"SELECT pg_notify('{NOTIFY_CHANNEL}', 'run')"}


async def run(conn: Any, ops: list[Op]) -> list[BaseException | None]:
    """Apply ``ops`` in one transaction, as :func:`journal_sql.plan` says."""
    gen = journal_sql.plan(ops, pg=True)
    async with conn.transaction():
        res: Any = None
        while True:
            try:
                kind, sql, args = gen.send(res)
            except StopIteration as stop:
                return list(stop.value)
            if kind == "fetch":
                res = await conn.fetch(sql, *args)
            elif kind == "many":
                await conn.executemany(sql, args)
                res = None
            elif kind == "notify":
                await conn.execute(_NOTIFY[sql])
                res = None
            else:
                await conn.execute(sql, *args)
                res = None


_SIMPLE = """
WITH lease AS (
    SELECT r.id FROM durapipe_runs r
    JOIN unnest($1::varchar[], $2::varchar[], $3::int[]) AS l(id, owner, attempt)
      ON r.id = l.id AND r.lease_owner = l.owner AND r.attempt = l.attempt
    FOR UPDATE OF r
), ins AS (
    INSERT INTO durapipe_events (run_id, seq, kind, step, name, label, at, attempt, data)
    SELECT e.run_id, e.seq, e.kind, e.step, e.name, e.label, e.at, e.attempt, e.data
    FROM unnest($4::varchar[], $5::int[], $6::varchar[], $7::varchar[], $8::varchar[], $9::varchar[],
                $10::float8[], $11::int[], $12::text[]) AS e(run_id, seq, kind, step, name, label, at, attempt, data)
    WHERE e.run_id IN (SELECT id FROM lease)
    RETURNING run_id
)
SELECT DISTINCT run_id FROM ins
"""


_ROW_TYPES = (
    *("varchar", "int", "varchar", "varchar", "varchar", "varchar", "float8", "int", "text"),
    "float8",  # started_at
)  # fmt: skip
_ONE_RUN_MAX = 8  # events of one op written by a statement of their own (a step writes two)


def _one_run_sql(n: int) -> str:
    """Append ``n`` events of one run, only while its lease is the op's: the fence (a locked
    read of the run's row) and the insert in one statement, so one round trip and one commit.
    The row count says which: all ``n`` rows, or none when the lease moved on."""
    k = len(_ROW_TYPES)
    rows = ", ".join(
        "(" + ", ".join(f"${r * k + i + 1}::{t}" for i, t in enumerate(_ROW_TYPES)) + ")"
        for r in range(n)
    )
    f = n * k
    return (
        f"INSERT INTO durapipe_events ({', '.join(ROW_COLS)}) SELECT * FROM (VALUES {rows}) AS e"
        f" WHERE EXISTS (SELECT 1 FROM durapipe_runs WHERE id = ${f + 1}::varchar"
        f" AND lease_owner = ${f + 2}::varchar AND attempt = ${f + 3}::int FOR UPDATE)"
    )


_ONE_RUN = {n: _one_run_sql(n) for n in range(1, _ONE_RUN_MAX + 1)}
_INSERTED = {n: f"INSERT 0 {n}" for n in range(1, _ONE_RUN_MAX + 1)}


async def append_one(conn: Any, op: Op) -> BaseException | None:
    """Append one op's events (at most _ONE_RUN_MAX) in one fenced statement: None, or
    LeaseLost when the run's lease is no longer the op's (nothing was inserted)."""
    rows = journal_sql.event_rows(op.events)
    args = [v for row in rows for v in row]
    status = await conn.execute(_ONE_RUN[len(rows)], *args, op.run_id, op.owner, op.attempt)
    if status == _INSERTED[len(rows)]:
        return None
    return LeaseLost(f"run {op.run_id}: lease lost")


async def run_simple(conn: Any, ops: list[Op]) -> list[BaseException | None]:
    """One round trip, committed on its own: fence and append for a whole batch."""
    if len(ops) == 1 and len(ops[0].events) <= _ONE_RUN_MAX:
        # A run stepping alone (the hot path): a plain multi-row insert costs less to plan and
        # run than the batch's unnest (bench/README.md, "A step at the price of one commit").
        return [await append_one(conn, ops[0])]
    leases = {op.run_id: (op.owner, op.attempt) for op in ops}
    ids = list(leases)
    cols: list[list[Any]] = [[] for _ in EVENT_COLS]
    for op in ops:
        for ev in op.events:
            for i, c in enumerate(EVENT_COLS):
                cols[i].append(ev[c])
    rows = await conn.fetch(
        _SIMPLE, ids, [leases[i][0] for i in ids], [leases[i][1] for i in ids], *cols
    )
    done = {r[0] for r in rows}
    return [None if op.run_id in done else LeaseLost(f"run {op.run_id}: lease lost") for op in ops]


# ---------------------------------------------------------------------- a server's databases


async def _admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(server: str, name: str, *, template: str | None = None) -> None:
    """Create database ``name`` on the server at ``server`` (a plain postgresql:// URL), as a copy
    of database ``template`` when given (nobody may be connected to it)."""
    copy = f" TEMPLATE {_ident(template)}" if template else ""
    await _admin(server, f"CREATE DATABASE {_ident(name)}{copy}")


async def drop_database(server: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions."""
    await _admin(server, f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
