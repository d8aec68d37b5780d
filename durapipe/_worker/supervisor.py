"""The side tasks of a worker (heartbeats, requests, wake-ups, log shipping), supervised.

A side task runs for as long as its worker. One that ends with an exception is a bug or a
broken environment, not something to carry on without: without heartbeats its runs' leases
lapse, without log shipping its output is lost. So it is logged, and the worker is told to stop
(``on_crash``), which it does loudly (a non-zero exit), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("durapipe.worker")


class Supervisor:
    def __init__(self, on_crash: Callable[[str, BaseException], None]) -> None:
        self._on_crash = on_crash
        self._tasks: list[asyncio.Task[Any]] = []
        self._once: set[asyncio.Future[Any]] = set()
        self.failure: tuple[str, BaseException] | None = None  # the first side task that died
        self._stopping = False

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` for the life of the worker as side task ``name``."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def once(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short job on the side, keeping a reference to it until it is done."""
        task = asyncio.ensure_future(coro)
        self._once.add(task)
        task.add_done_callback(self._once.discard)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError("it returned")  # a side task never ends by itself
        log.error(
            "worker side task %s died (%s: %s); stopping the worker",
            task.get_name(),
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if self.failure is None:
            self.failure = (task.get_name(), exc)
            self._on_crash(task.get_name(), exc)

    async def stop(self, *, let_end: tuple[str, ...] = ()) -> None:
        """Cancel the side tasks (those named in ``let_end`` end by themselves) and wait."""
        self._stopping = True
        for t in self._tasks:
            if t.get_name() not in let_end:
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 15)
        self._tasks = []
