"""Queues at the store and client: the claim's limits (concurrency, per key, rate window,
priority), a waiting run's place in line, steering a queued run, and bad input refused with
nothing changed — on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

import durapipe as dp
from durapipe._store import schema as S
from durapipe._store.store import ClaimFilter
from tests.pipelines import queues as Q

ANY = ClaimFilter()


async def _claim(store: Any, now: float, limit: int = 50, owner: str = "w1") -> list[str]:
    got = await store.claim(owner=owner, flt=ANY, limit=limit, ttl=30, now=now)
    return [r.id for r in got.rows]


async def _end(store: Any, run_ids: list[str]) -> None:
    def tx(conn: Any) -> None:
        conn.execute(
            update(S.runs)
            .where(S.runs.c.id.in_(run_ids))
            .values(status="completed", lease_owner=None, finished_at=time.time())
        )

    await store._write(tx)


@pytest.mark.asyncio
async def test_the_claim_holds_concurrency_and_frees_a_slot_when_a_run_ends(store: Any) -> None:
    client = dp.Client(store)
    ids = [await client.start(Q.job, queue=Q.pair) for _ in range(5)]
    plain = await client.start(Q.job)  # not on a queue: claimed as ever
    now = time.time() + 1000
    first = await _claim(store, now)
    assert plain in first and len(first) == 3  # the plain run and two of the queue
    assert first[1:] == ids[:2]  # oldest first
    assert await _claim(store, now, owner="w2") == []  # full, whoever asks
    await store.release(ids[0], owner="w1", attempt=1, now=now)  # released: still holds its slot
    assert await _claim(store, now, owner="w2") == [ids[0]]  # taken back by the ordinary claim
    await _end(store, [ids[1]])
    assert await _claim(store, now, owner="w2") == [ids[2]]
    views = {v.name: v for v in await client.queues()}
    assert (views["pair"].depth, views["pair"].running) == (2, 2)


@pytest.mark.asyncio
async def test_per_key_limits_and_priorities(store: Any) -> None:
    client = dp.Client(store)
    a1 = await client.start(Q.job, queue="envs", key="a")
    a2 = await client.start(Q.job, queue="envs", key="a")
    b1 = await client.start(Q.job, queue="envs", key="b")
    nokey = await client.start(Q.job, queue="envs")
    now = time.time() + 1000
    assert await _claim(store, now) == [a1, b1, nokey]
    await _end(store, [a1])
    assert await _claim(store, now) == [a2]

    low = await client.start(Q.job, queue=Q.ranked, priority=1)
    high = await client.start(Q.job, queue=Q.ranked, priority=7)
    mid = await client.start(Q.job, queue=Q.ranked, priority=3)
    high2 = await client.start(Q.job, queue=Q.ranked, priority=7)
    places = await client.queue_places([low, high, mid, high2])
    assert places == {
        high: ("ranked", 0),
        high2: ("ranked", 1),
        mid: ("ranked", 2),
        low: ("ranked", 3),
    }
    order = []
    for _ in range(4):
        (got,) = await _claim(store, now)
        order.append(got)
        await _end(store, [got])
    assert order == [high, high2, mid, low]


@pytest.mark.asyncio
async def test_the_rate_window_slides_and_tells_the_worker_when_it_has_room(store: Any) -> None:
    client = dp.Client(store)
    ids = [await client.start(Q.job, queue=Q.rated) for _ in range(8)]
    now = time.time() + 1000
    assert await _claim(store, now) == ids[:5]
    got = await store.claim(owner="w", flt=ANY, limit=50, ttl=30, now=now + 0.5)
    assert got.rows == [] and got.next_at == pytest.approx(now + 1.0)
    assert await _claim(store, now + 1.01) == ids[5:]
    view = next(v for v in await client.queues() if v.name == "rated")
    assert view.rate == (5, 1.0) and view.depth == 0


@pytest.mark.asyncio
async def test_a_queued_run_is_cancelled_stopped_and_resumed_in_line(store: Any) -> None:
    client = dp.Client(store)
    await client.set_queue("line", concurrency=1)
    a, b, c = [await client.start(Q.job, queue="line") for _ in range(3)]
    assert (await client.get(a)).status == "queued"
    assert await client.queue_places([a, b, c]) == {a: ("line", 0), b: ("line", 1), c: ("line", 2)}
    assert await client.cancel(a) == "cancelled"  # none of its code ran: nothing to unwind
    assert [e["kind"] for e in await client.events(a)] == ["run_started", "run_cancelled"]
    assert await client.stop(b) == "stopped"
    assert await client.queue_places([b, c]) == {c: ("line", 0)}
    await client.resume(b)  # back in line, in its place by age
    assert (await client.get(b)).status == "queued"
    assert await client.queue_places([b, c]) == {b: ("line", 0), c: ("line", 1)}


@pytest.mark.asyncio
async def test_bad_queue_input_is_refused_and_changes_nothing(store: Any) -> None:
    client = dp.Client(store)
    await client.set_queue("kept", concurrency=3)
    for bad in (
        {"concurrency": 0},
        {"concurrency": -1},
        {"key_concurrency": 0},
        {"rate": (0, "1m")},
        {"rate": (5, "soon")},
        {"rate": (5, 0)},
    ):
        with pytest.raises(dp.ConfigError):
            await client.set_queue("kept", **bad)
    assert [(v.name, v.concurrency) for v in await client.queues()] == [("kept", 3)]
    with pytest.raises(dp.ConfigError, match="no queue named 'nope'.*declare it"):
        await client.start(Q.job, queue="nope")
    with pytest.raises(dp.DurapipeError, match="needs a queue"):
        await client.start(Q.job, priority=3)
    with pytest.raises(dp.DurapipeError, match="does not order runs by priority"):
        await client.start(Q.job, queue="kept", priority=3)
    assert await client.list() == []
    with pytest.raises(dp.ConfigError):
        dp.Queue("pair", concurrency=3)  # declared in the module with concurrency 2
