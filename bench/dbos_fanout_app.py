"""DBOS workflows of bench/dbos_fanout.py (imported by the driver and by the workers)."""

from __future__ import annotations

from dbos import DBOS

FAN = "fan"  # registered by the driver (DBOS.register_queue_async); every worker dequeues from it


@DBOS.step()
async def double(i: int) -> int:
    return 2 * i


@DBOS.workflow()
async def fan_child(i: int) -> int:
    return await double(i)


@DBOS.workflow()
async def fan_parent(n: int) -> int:
    """As bench/fanout_pipelines.fan_parent: n children on the queue (so both workers take
    them), then their results awaited."""
    q = await DBOS.retrieve_queue_async(FAN)
    assert q is not None
    handles = [await q.enqueue_async(fan_child, i) for i in range(n)]
    return sum([await h.get_result() for h in handles])
