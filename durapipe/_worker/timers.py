"""Timers: a worker wakes suspended runs at their time, however many are due at once.

The claim loop (``Runner.serve``) takes runnable runs a batch at a time, in the order of
``Store.claim``: a statement that finds and orders every runnable run, so with thousands of
timers due in the same second each batch of 50 cost a sort of all of them (PostgreSQL ~30 ms
with 10,000 due), and the runs woke seconds late. This side task looks ahead instead: it reads
the timers due within the next ``horizon`` seconds (ids and wake times, an index range, nothing
taken), and just before each is due (``lead`` seconds) claims them by id, in large batches, so
that each run has replayed to its sleep and waits the last moment in memory, leased, like a
short sleep. Nothing is held that the database does not also say: a worker killed with runs
taken early loses nothing (their leases expire and another worker takes them, as any run of a
dead worker); timers it had only read were never taken.

The claim loop stays as it was (pending runs, expired leases, queues, and any timer this part
did not take); both take from the same free slots (``concurrency``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._clock import Clock
from .._store import Store
from .._store.store import Claimed, ClaimFilter
from ..errors import DatabaseUnavailable

log = logging.getLogger("durapipe.worker")

HORIZON = 2.0  # seconds ahead the timers are read
PAGE = 2_000  # timers read at most at once (a later page is read once these are taken)
# Taken this much before their time: enough to hide the claim's round trip and the replay, short
# because a run taken early holds one of the worker's slots (``concurrency``) while it waits.
LEAD = 0.025
BATCH = 500  # runs taken by one claim at most


class Timers:
    """Reads the timers due soon and claims each just before it is due."""

    def __init__(
        self,
        store: Store,
        *,
        owner: str,
        flt: ClaimFilter,
        clock: Clock,
        lease_ttl: float,
        suspend_after: float,
        free: Callable[[], int],
        slot_freed: asyncio.Event,
        take: Callable[[Claimed], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.owner = owner
        self.flt = flt
        self.clock = clock
        self.lease_ttl = lease_ttl
        # The rest is slept in memory, which a run does only for waits shorter than
        # suspend_after (a longer one would suspend again at once).
        self.lead = max(0.0, min(LEAD, suspend_after / 2))
        self.waiting = 0  # due timers read, waiting for a free slot
        self.free = free
        self.slot_freed = slot_freed
        self.take = take
        self.stopping = stopping

    async def loop(self) -> None:
        """The side task: read what is due within the horizon, take each on time; repeat."""
        backoff = 0.5
        while True:
            if self.stopping():  # no more claims; the worker cancels this task as it closes
                await self.clock.sleep(1.0)
                continue
            read_at = self.clock.now()
            try:
                upcoming = await self.store.upcoming_timers(
                    flt=self.flt, until=read_at + HORIZON, limit=PAGE
                )
                await self._take_on_time(upcoming, until=read_at + HORIZON / 2)
                backoff = 0.5
            except DatabaseUnavailable as exc:
                log.warning("reading due timers failed: %s", exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            # A timer recorded after this read is seen by the next one; one that comes due
            # before (a sleep only a little longer than suspend_after) the claim loop takes.
            if len(upcoming) < PAGE:  # all of the window was seen: look again halfway on
                await self._pause(read_at + HORIZON / 2 - self.clock.now())

    async def _take_on_time(self, upcoming: list[tuple[str, float]], *, until: float) -> None:
        """Claim the timers as they come due (``lead`` early), until ``until`` or all taken."""
        try:
            await self._take_each(upcoming, until)
        finally:
            self.waiting = 0

    async def _take_each(self, upcoming: list[tuple[str, float]], until: float) -> None:
        i = 0
        while i < len(upcoming) and not self.stopping():
            now = self.clock.now()
            at = upcoming[i][1] - self.lead
            if at > now:
                if at > until:
                    return
                await self._pause(at - now)
                continue
            due_by = now + self.lead
            j = i
            while j < len(upcoming) and upcoming[j][1] <= due_by:
                j += 1
            ids = [rid for rid, _ in upcoming[i:j]]
            i = j
            while ids and not self.stopping():
                self.waiting = len(ids)
                free = self.free()
                if free <= 0:  # every slot busy: wait for one (each run that ends frees one)
                    self.slot_freed.clear()
                    if self.free() <= 0:
                        await self.slot_freed.wait()
                    continue
                batch, ids = ids[: min(free, BATCH)], ids[min(free, BATCH) :]
                now = self.clock.now()
                got = await self.store.claim_timers(
                    batch,
                    owner=self.owner,
                    flt=self.flt,
                    ttl=self.lease_ttl,
                    now=now,
                    due_by=now + self.lead,
                )
                self.take(got)
        self.waiting = 0

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await self.clock.sleep(seconds)
