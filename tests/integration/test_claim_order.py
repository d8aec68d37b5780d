"""The claim's order across the kinds of runnable runs, on SQLite and PostgreSQL.

A claim reads pending runs, due sleepers, due waiters and lapsed leases each from its own
index, as far as its limit, and takes the earliest of all (wake time, or creation time when
there is none). The order and the limit are those of one sorted list of every runnable run.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import durapipe as dp
from durapipe._store.claims import ClaimFilter

pytestmark = pytest.mark.asyncio


@dp.pipeline(name="claim_order", version="1")
async def order_me() -> str:
    return "ok"


FLT = ClaimFilter(pipelines={"claim_order": "1"})


async def _shape(store: Any, rid: str, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)

    def go(conn: Any) -> None:
        from sqlalchemy import text

        conn.execute(
            text(f"UPDATE durapipe_runs SET {sets} WHERE id = :rid"), {**values, "rid": rid}
        )

    await store._write(go)


async def test_the_earliest_runnable_runs_of_every_kind_are_taken_first(store: Any) -> None:
    client = dp.Client(store)
    now = time.time()
    ids = {name: await client.start(order_me) for name in "abcdefghij"}
    at = {
        "a": now - 50,  # pending, created then
        "b": now - 40,  # sleeping, due then
        "c": now - 30,  # lapsed lease (running; its holder stopped renewing it)
        "d": now - 20,  # waiting with a deadline that passed then
        "e": now - 10,  # pending
        "f": now - 45,  # sleeping, due
    }
    for name in "ae":
        await _shape(store, ids[name], created_at=at[name], wake_at=None)
    for name in "bf":
        await _shape(store, ids[name], status="sleeping", wake_at=at[name])
    await _shape(
        store,
        ids["c"],
        status="running",
        created_at=at["c"],
        wake_at=None,
        lease_owner="wkr_gone",
        lease_expires_at=now - 5,
    )
    await _shape(store, ids["d"], status="waiting", wake_at=at["d"])
    # Not runnable: a sleeper not yet due, a waiter with no deadline, a held lease, a pipeline
    # this worker does not carry.
    await _shape(store, ids["g"], status="sleeping", wake_at=now + 30)
    await _shape(store, ids["h"], status="waiting", wake_at=None, created_at=now - 100)
    await _shape(
        store,
        ids["i"],
        status="running",
        created_at=now - 100,
        lease_owner="wkr_alive",
        lease_expires_at=now + 60,
    )
    await _shape(store, ids["j"], pipeline="someone_else", created_at=now - 100)

    first = await store.claim(owner="wkr_me", flt=FLT, limit=4, ttl=300, now=now)
    assert sorted(r.id for r in first.rows) == sorted(ids[n] for n in "afbc")  # the 4 earliest
    assert all(r.lease_owner == "wkr_me" and r.status == "running" for r in first.rows)
    rest = await store.claim(owner="wkr_me", flt=FLT, limit=10, ttl=300, now=now)
    assert sorted(r.id for r in rest.rows) == sorted(ids[n] for n in "de")
    # The next run due, for the worker's wait: the sleeper not yet due (the held lease expires
    # later, and the leases taken here later still).
    assert rest.next_at == pytest.approx(now + 30, abs=0.01)
    assert (await store.claim(owner="wkr_me", flt=FLT, limit=10, ttl=300, now=now)).rows == []
