"""Leases: heartbeats that keep the runs' leases alive, stop/cancel requests delivered to the
runs, lost leases dropped, and leases given back."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._clock import Clock
from .._engine import RunContext
from .._kinds import Request, RunStatus
from .._store import Store
from ..errors import DatabaseUnavailable

log = logging.getLogger("durapipe.worker")


class Leases:
    """The leases of the runs one process holds (``held``: run id -> its context)."""

    def __init__(
        self,
        store: Store,
        *,
        owner: str,
        held: dict[str, RunContext],
        clock: Clock,
        lease_ttl: float,
        poll_interval: float,
    ) -> None:
        self.store = store
        self.owner = owner
        self.held = held
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.dropped: dict[str, int] = {}  # run -> attempt: dropped after a failed write

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                held = {
                    rid: ctx.attempt
                    for rid, ctx in self.held.items()
                    if ctx.status == RunStatus.RUNNING
                }
                lost, requests = await self.store.heartbeat(
                    worker_id=self.owner, held=held, ttl=self.lease_ttl, now=self.clock.now()
                )
            except (
                DatabaseUnavailable,
                Exception,
            ) as exc:  # keep beating; the lease is the arbiter
                log.warning("heartbeat failed: %s", exc)
                continue
            for rid in lost:
                ctx = self.held.get(rid)
                if ctx is not None:
                    log.warning("run %s: lease lost; dropping it", rid)
                    self.drop(ctx)
            self.deliver(requests)

    @staticmethod
    def drop(ctx: RunContext) -> None:
        """Stop executing a run whose lease this attempt no longer holds: nothing more of it
        runs here (its journaled calls raise, its writes would be refused anyway)."""
        ctx.interrupt(Request.LOST)
        if ctx.task is not None:
            ctx.task.cancel("durapipe: lease lost")

    async def control_loop(self) -> None:
        """Deliver stop/cancel requests promptly, and nudge runs waiting in memory."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self.held:
                continue
            try:
                requests = await self.store.requests_for(list(self.held))
            except Exception as exc:
                log.debug("control poll failed: %s", exc)
                continue
            self.deliver(requests)

    async def control_now(self) -> None:
        """Deliver the requests now (a "control" notification came)."""
        with contextlib.suppress(Exception):
            self.deliver(await self.store.requests_for(list(self.held)))

    def deliver(self, requests: dict[str, str]) -> None:
        for rid, req in requests.items():
            ctx = self.held.get(rid)
            if ctx is not None and ctx.request is None or (ctx is not None and req == "cancel"):
                ctx.interrupt(req)

    async def release(self, ctx: RunContext) -> None:
        with contextlib.suppress(Exception):
            await self.store.release(
                ctx.run_id, owner=ctx.owner, attempt=ctx.attempt, now=self.clock.now()
            )

    async def release_all(self) -> None:
        """An exiting process gives back what it still holds, so nobody waits for its leases."""
        held = {c.run_id: c.attempt for c in self.held.values() if c.request != Request.LOST}
        for run_id, attempt in {**self.dropped, **held}.items():
            with contextlib.suppress(Exception):
                await self.store.release(
                    run_id, owner=self.owner, attempt=attempt, now=self.clock.now()
                )

    async def dropped_run(self, ctx: RunContext) -> None:
        """Say why this process dropped a run: another holder took its lease, or a history write
        failed (the database refused it: disk full, a lost connection...). A lease that is still
        this process's is given back, so `durapipe resume` or a worker takes the run at once."""
        try:
            now = await self.store.get_run(ctx.run_id)
        except Exception:
            now = None
        if now is not None and (now.lease_owner != ctx.owner or now.attempt != ctx.attempt):
            by = f"worker {now.lease_owner}" if now.lease_owner else "a client"
            log.warning(
                "run %s: lease lost to %s (attempt %s, now %s); dropped it without writing more",
                ctx.run_id,
                by,
                now.attempt,
                now.status,
            )
            return
        err = ctx.write_error
        if err is None:  # dropped without a failed write (durapipe.testing's crash): keep it
            log.debug("run %s: dropped; its lease is left to lapse", ctx.run_id)
            return
        if isinstance(err, DatabaseUnavailable):
            why = str(err)
        else:
            detail = (str(err).strip().splitlines() or [""])[0]
            why = f"the database refused the write: {type(err).__name__}: {detail}"
        # Kept, not given back now: this process would only claim it again and repeat the step
        # against a database that refuses it. Its lease lapses, or is released when this exits.
        self.dropped[ctx.run_id] = ctx.attempt
        log.warning(
            "run %s: could not write its history (%s); dropped it: it is released when this "
            "process exits (or its lease expires), and `durapipe resume %s` continues it",
            ctx.run_id,
            why,
            ctx.run_id,
        )
