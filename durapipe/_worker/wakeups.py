"""Wake-ups: a worker learns at once of new runs, inputs, finished children and requests.

The store watches the database for changes other connections commit (``Store.watch``, one way
per database, reconnecting when a server goes); this part decides what each change wakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

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
        # Told of changes that may bring a schedule's tick forward (the worker's Scheduler).
        self.schedules_changed: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        return "durapipe-watch" if self.store.is_sqlite else "durapipe-listen"

    async def loop(self) -> None:
        """The side task that watches the database for changes until the runner closes."""
        listening = None if self.store.is_sqlite else self.wake.set  # what was sent meanwhile
        await self.store.watch(self.on_notify, on_listening=listening, until=self.closing)

    def on_notify(self, payload: str) -> None:
        if payload == "schedule" or payload == "run":  # added, paused, resumed; a run ended
            if self.schedules_changed is not None:
                self.schedules_changed()
            if payload == "schedule":
                return
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
