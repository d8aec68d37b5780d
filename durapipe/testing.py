"""Helpers for testing pipelines: run one to completion in-process, resume it, skip time.

view = await run_pipeline(store, my_pipeline, n=3)
assert view.status == "completed"
"""

from __future__ import annotations

import math
from typing import Any

from ._client import Client, RunView
from ._clock import SYSTEM_CLOCK, Clock, SkippingClock
from ._definition import PipelineDef
from ._runner import Runner, drive_tree
from ._store import Store
from ._store import schema as S

__all__ = ["SkippingClock", "resume_run", "run_pipeline"]


async def run_pipeline(
    store: Store,
    pipeline: PipelineDef,
    /,
    *,
    run_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    pin: bool | None = None,
    **inputs: Any,
) -> RunView:
    """Start ``pipeline`` and execute it (and its children) here until it ends or stops."""
    client = Client(store)
    runner = Runner(store, kind="run", pipelines=[pipeline], suspend_after=math.inf, clock=clock)
    await runner.start()
    try:
        row, _ = await client.create_run(
            pipeline, inputs, run_id=run_id, pin=pin, owner=runner.id, ttl=runner.lease_ttl
        )
        await drive_tree(runner, row)
    finally:
        await runner.close()
    return await client.get(row.id)


async def resume_run(
    store: Store, pipeline: PipelineDef, run_id: str, *, clock: Clock = SYSTEM_CLOCK
) -> RunView:
    """Continue a stopped, failed, blocked or abandoned run here with the given definition."""
    client = Client(store)
    row = await client.row(run_id)
    runner = Runner(store, kind="run", pipelines=[pipeline], suspend_after=math.inf, clock=clock)
    await runner.start()
    try:
        taken = await store.claim_run(
            run_id,
            owner=runner.id,
            ttl=runner.lease_ttl,
            now=clock.now(),
            statuses=("stopped", "failed", "blocked", *S.ACTIVE),
            dead_owners=[row.lease_owner] if row.lease_owner else [],
        )
        if taken is None:
            raise AssertionError(f"run {run_id} could not be taken (status {row.status})")
        await drive_tree(runner, taken, resumed=row.status)
    finally:
        await runner.close()
    return await client.get(run_id)
