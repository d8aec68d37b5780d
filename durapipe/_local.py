"""Foreground execution: one run tree executed in this process until it ends or parks.

``durapipe run``, ``durapipe resume``, a cancellation run here (``durapipe cancel``,
``Client.cancel``) and the testing kit all execute runs this way: a runner of kind ``run`` that
claims only the runs of one tree, built by :func:`local_runner`; a run taken with :func:`take`,
whose one rule for a run held by a process that died is :func:`dead_lease_holders`; and
:func:`drive_tree`, which executes it and the children it starts.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from typing import Any

from . import _client
from ._client import Client
from ._clock import SYSTEM_CLOCK, Clock
from ._definition import PipelineDef, load_target
from ._engine import HOST, LogRecord
from ._kinds import ACTIVE, RESUMABLE_EXTRA, TERMINAL, Request, RunStatus
from ._runner import Runner
from ._store import Store
from .errors import DurapipeError

# What a run can be taken from to continue it here (resume, a cancellation run here).
TAKEABLE = (*RESUMABLE_EXTRA, RunStatus.FAILED, *ACTIVE)


def local_runner(
    store: Store,
    pipelines: list[PipelineDef],
    *,
    clock: Clock = SYSTEM_CLOCK,
    lease_ttl: float | None = None,
    on_record: Callable[[LogRecord], None] | None = None,
    on_input: Callable[[str, str, str | None, bool], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> Runner:
    """The runner of a foreground execution: waits stay in memory (it never suspends)."""
    return Runner(
        store,
        kind="run",
        pipelines=pipelines,
        suspend_after=math.inf,
        clock=clock,
        lease_ttl=lease_ttl,
        on_record=on_record,
        on_input=on_input,
        on_tick=on_tick,
    )


async def dead_lease_holders(store: Store, root_run_id: str) -> list[str]:
    """The holders of leases in a run tree that are known gone, whose runs may be taken at once
    instead of after their leases expire: processes of this host that have exited (whether they
    said so, or were killed and could not)."""
    dead = []
    for w in await store.lease_holders(root_run_id):
        if w.host != HOST:
            continue  # another machine: only its lease expiring tells
        if w.stopped_at is not None or not _alive(int(w.pid)):
            dead.append(str(w.id))
    return dead


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def take(runner: Runner, row: Any, statuses: tuple[str, ...] = TAKEABLE) -> Any | None:
    """Take run ``row`` for ``runner`` if its status is one of ``statuses`` and nobody alive holds
    it: a lease held by a process known dead (:func:`dead_lease_holders`) is taken at once, and
    so are the runs of its tree that process held, when :func:`drive_tree` meets them.
    -> the run as taken, or None (a live process holds it, or its status is not one of those).
    """
    dead = await dead_lease_holders(runner.store, row.root_run_id)
    runner.take_over(dead)
    return await runner.store.claim_run(
        row.id,
        owner=runner.id,
        ttl=runner.lease_ttl,
        now=runner.clock.now(),
        statuses=statuses,
        dead_owners=dead,
    )


async def drive_tree(
    runner: Runner, row: Any, *, resumed: str | None = None, cancel: bool = False
) -> str:
    """Execute one run here, and any children it starts, until the run ends or parks.

    A run that continues as new (``dp.continue_as_new``) is followed: its successor is taken
    and executed here too, until a link of the chain ends otherwise (or a worker took it).
    """
    serve: asyncio.Future[None] | None = None
    try:
        while True:
            root = runner.spawn(row, resumed=resumed, cancel=cancel)
            serve = asyncio.ensure_future(
                runner.serve(runner.claim_filter(root_run_id=row.root_run_id), until=root)
            )
            status = await root
            # Children being cancelled with their parent finish here (their finally blocks run).
            settle = runner.clock.now() + 30
            while runner.tasks and runner.clock.now() < settle:
                await asyncio.wait(list(runner.tasks), timeout=1)
            if status != RunStatus.CONTINUED:
                return status
            nxt = await runner.store.live_link(row.id)
            taken = None if nxt is None or nxt.id == row.id else await take(runner, nxt)
            if taken is None:  # a worker took the successor: it is theirs now
                return status
            await serve  # it returns now that its run ended
            row, resumed, cancel = taken, None, False
    finally:
        runner.stop_claiming()
        if serve is not None:
            await serve
        if runner.tasks:
            runner.interrupt_all(Request.STOP_NOW)
            await asyncio.wait(list(runner.tasks), timeout=10)


async def cancel_here(
    client: Client, run_id: str, make_runner: Callable[[PipelineDef], Runner] | None = None
) -> str:
    """Run the cancellation of a run nobody holds in this process, when its code loads here.

    -> ``"cancelled"`` (its cancellation ran here), the status it ended with if a worker took
    it first and finished it, ``"requested"`` (a worker holds it now and carries out the
    cancel), or ``"queued"`` (its code cannot be loaded here).
    """
    row = await client.row(run_id)
    try:
        pdef = load_target(row.entrypoint)
    except DurapipeError:
        return "queued"
    runner = make_runner(pdef) if make_runner is not None else local_runner(client.store, [pdef])
    await runner.start()
    try:
        taken = await take(runner, row)
        if taken is None:  # a worker took it meanwhile: it carries out the cancel
            after = await client.row(run_id)
            return str(after.status) if after.status in TERMINAL else "requested"
        return await drive_tree(runner, taken, cancel=True)
    finally:
        await runner.close()


_client.install_cancel_here(cancel_here)
