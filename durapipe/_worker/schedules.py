"""Firing schedules: a worker's side task that starts the runs of due ticks.

Every worker carrying a scheduled pipeline runs one; there is no leader. Each sleeps until the
next tick of its pipelines' schedules (or a change to them: a schedule added, paused, resumed,
a run ending that a ``queue`` schedule waits for), then fires what is due. The store decides who
fires a tick: the schedule's advance and the tick's run are one transaction under the
schedule's row lock, and the run's id is derived from the schedule and the tick, so however
many workers try, and whichever of them is killed half-way, each tick starts exactly one run.

Code-declared schedules (``@dp.pipeline(schedule=...)``) are upserted when the side task starts,
that is when the worker has loaded the modules that declare them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from .. import _schedules as sch
from .. import _serde
from .._clock import Clock
from .._definition import PipelineDef
from .._engine import HOST
from .._store import Store
from ..errors import DatabaseUnavailable

log = logging.getLogger("durapipe.worker")

LONGEST_SLEEP = 30.0  # look again at least this often (a change another worker missed telling)
CHANGES_EVERY = 0.05  # look again at most this often for changes (a tick's time is kept exactly)


class Scheduler:
    """Fires the due ticks of the schedules of the pipelines a worker carries."""

    def __init__(
        self,
        store: Store,
        *,
        pipelines: dict[str, PipelineDef],
        owner: str,
        clock: Clock,
        on_fired: Callable[[], None],
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.owner = owner
        self.clock = clock
        self.on_fired = on_fired  # runs were created: the claim loop looks at once
        self.wake = asyncio.Event()
        self.builds = {
            name: sch.run_builder(
                version=p.version,
                entrypoint=p.entrypoint,
                pinned=p.pin,
                by={"host": HOST, "pid": os.getpid(), "worker": owner},
                now=clock.now,
            )
            for name, p in pipelines.items()
        }

    def changed(self) -> None:
        """Something that may bring a tick forward happened (a notification): look again."""
        self.wake.set()

    async def declare(self) -> None:
        """Upsert the schedules declared in code by the pipelines this worker carries."""
        now = self.clock.now()
        for p in self.pipelines.values():
            if p.schedule is None:
                continue
            row = sch.schedule_row(
                name=p.name,
                pipeline=p.name,
                target=p.entrypoint,
                schedule=p.schedule,
                inputs=_serde.dumps(p.bind_inputs(dict(p.schedule.inputs)), what="the inputs"),
                source="code",
                now=now,
            )
            outcome = await self.store.declare_schedule(row)
            if outcome == "taken":
                log.warning(
                    "schedule %r of pipeline %s is not applied: a schedule of that name was "
                    "added with `durapipe schedule add`; delete it to use the code's",
                    p.name,
                    p.name,
                )

    async def loop(self) -> None:
        """The side task: declare, then fire due ticks until cancelled."""
        names = list(self.pipelines)
        backoff = 0.5
        while True:
            try:
                await self.declare()
                break
            except DatabaseUnavailable as exc:
                log.warning("cannot declare schedules (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        while True:
            self.wake.clear()  # before looking: a change that comes meanwhile is kept
            try:
                pause = await self.fire(names)
                backoff = 0.5
            except DatabaseUnavailable as exc:
                log.warning("firing schedules failed: %s", exc)
                pause = backoff
                backoff = min(backoff * 2, 10.0)
            if pause <= 0:
                continue
            looked = asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), pause)
                # Woken by a change: every commit that ends runs tells, so thousands of runs
                # waking at once would look up the next tick hundreds of times a second.
                gap = min(CHANGES_EVERY, pause)  # (never past the next tick's time)
                await asyncio.sleep(looked + gap - asyncio.get_running_loop().time())

    async def fire(self, names: list[str]) -> float:
        """Fire what is due now. -> seconds until the next look (0: at once)."""
        now = self.clock.now()
        nxt = await self.store.next_schedule_at(names)
        if nxt is None:
            return LONGEST_SLEEP
        if nxt > now:
            return min(nxt - now, LONGEST_SLEEP)
        fired = await self.store.fire_due(
            pipelines=names, now=now, build=self._build, clock=self.clock.now
        )
        if fired.run_ids:
            self.on_fired()
        return 0.0 if fired.more or fired.schedules else min(0.05, LONGEST_SLEEP)

    def _build(
        self, row: Any, tick: float, run_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.builds[row.pipeline](row, tick, run_id)
