"""Wake-ups: a worker learns at once of new runs, inputs, finished children and requests.

PostgreSQL: LISTEN on the ``durapipe`` channel (reconnecting when the server goes). SQLite:
``PRAGMA data_version``, which changes when another connection commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .._engine import RunContext
from .._store import Store

log = logging.getLogger("durapipe.worker")


class Wakeups:
    """Turns notifications into wake-ups: of the claim loop (``wake``), of the runs held
    (their ``nudge``), and of request delivery (``control_now``)."""

    def __init__(
        self,
        store: Store,
        *,
        held: dict[str, RunContext],
        wake: asyncio.Event,
        closing: asyncio.Event,
        control_now: Callable[[], None],
    ) -> None:
        self.store = store
        self.held = held
        self.wake = wake
        self.closing = closing
        self.control_now = control_now

    @property
    def name(self) -> str:
        return "durapipe-watch" if self.store.is_sqlite else "durapipe-listen"

    def loop(self) -> Any:
        """The side task that watches: LISTEN on PostgreSQL, data_version on SQLite."""
        return self.sqlite_watch() if self.store.is_sqlite else self.listen_loop()

    async def listen_loop(self) -> None:
        """LISTEN for new runs, inputs and finished children; reconnect when the server goes."""
        import asyncpg

        dsn = self.store.plain_pg_dsn()
        while not self.closing.is_set():
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
            except Exception as exc:
                log.debug("LISTEN connection failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), 2)
                continue
            try:
                await conn.add_listener("durapipe", self.on_notify)
                self.wake.set()  # anything sent while we were not listening
                while not self.closing.is_set() and not conn.is_closed():
                    try:
                        await asyncio.wait_for(self.closing.wait(), 5)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=5)
            except Exception as exc:
                log.debug("LISTEN connection lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    async def sqlite_watch(self) -> None:
        """SQLite's LISTEN: PRAGMA data_version changes when another connection commits.

        Reading it costs microseconds and takes no lock, so every 50 ms is cheap; it wakes the
        claim loop and waiting runs promptly instead of at the next poll.
        """
        import sqlite3

        assert self.store.url.path is not None
        conn = sqlite3.connect(self.store.url.path, timeout=1, isolation_level=None)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(0.05)
                try:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if now != last:
                    last = now
                    self.on_notify(None, 0, "durapipe", "run")
        finally:
            conn.close()

    def on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith("input:"):
            ctx = self.held.get(payload[6:])
            if ctx is not None:
                ctx.nudge.set()
            return
        if payload == "control":
            for ctx in self.held.values():
                ctx.nudge.set()
            self.control_now()
            return
        self.wake.set()
        for ctx in self.held.values():
            ctx.nudge.set()
