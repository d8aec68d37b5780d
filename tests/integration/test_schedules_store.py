"""Schedules against the store: firing is exactly once per tick under concurrent firers, the
catch-up and overlap policies, the Client's methods and their refusals. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe import _schedules as sch
from durapipe._definition import load_target
from durapipe._store import open_store
from durapipe._store import schema as S

TICK = f"{PIPELINES / 'scheduled.py'}:tick"


def _build(version: str = "v") -> Any:
    return sch.run_builder(
        version=version, entrypoint=TICK, pinned=False, by={"test": True}, now=time.time
    )


async def _add(client: dp.Client, name: str, spec: Any, *, first: float | None = None) -> None:
    await client.add_schedule(name, TICK, spec)
    if first is not None:  # pretend it was added earlier: its first tick is in the past

        def _tx(conn: Any) -> None:
            conn.execute(
                S.schedules.update().where(S.schedules.c.name == name).values(next_fire_at=first)
            )

        await client.store._write(_tx)


async def _runs(client: dp.Client, name: str) -> list[dp.RunView]:
    views = [v for v in await client.list(limit=100_000) if v.schedule == name]
    return sorted(views, key=lambda v: v.scheduled_at or 0)


@pytest.mark.asyncio
async def test_concurrent_firers_start_each_tick_exactly_once(db_url: str) -> None:
    now = float(int(time.time()))
    stores = [await open_store(db_url) for _ in range(4)]
    client = dp.Client(stores[0])
    try:
        await _add(client, "often", dp.Every("1s", overlap="allow", catch_up="all"), first=now - 40)
        build = _build()

        async def fire(store: Any) -> list[str]:
            got: list[str] = []
            for _ in range(5):  # every firer tries several times, all at once
                got += (await store.fire_due(pipelines=["tick"], now=now, build=build)).run_ids
            return got

        results = await asyncio.gather(*(fire(s) for s in stores))
        created = [rid for r in results for rid in r]
        assert len(created) == len(set(created)) == 41  # ticks now-40 .. now, each once
        runs = await _runs(client, "often")
        assert [v.scheduled_at for v in runs] == [now - 40 + i for i in range(41)]
        assert all(v.run_id == sch.tick_run_id("often", v.scheduled_at or 0) for v in runs)
        view = await client.get_schedule("often")
        assert view.next_fire_at == now + 1 and view.last_tick_at == now and view.skipped == 0
        events = await client.events(runs[0].run_id)
        assert events[0]["kind"] == "run_started"
        assert events[0]["data"]["schedule"] == "often"
        assert events[0]["data"]["scheduled_at"] == now - 40
    finally:
        for s in stores:
            await s.close()


@pytest.mark.asyncio
async def test_catch_up_policies(store: Any) -> None:
    client = dp.Client(store)
    now = float(int(time.time()))
    gap = now - 10  # ten ticks passed with no worker
    await _add(client, "all", dp.Every("1s", overlap="allow", catch_up="all"), first=gap)
    await _add(client, "last", dp.Every("1s", overlap="allow", catch_up="last"), first=gap)
    await _add(client, "none", dp.Every("1s", overlap="allow", catch_up="none"), first=gap)
    await store.fire_due(pipelines=["tick"], now=now + 0.2, build=_build())
    assert len(await _runs(client, "all")) == 11
    last = await _runs(client, "last")
    assert [v.scheduled_at for v in last] == [now]  # only the latest tick
    assert (await client.get_schedule("last")).skipped == 10
    none = await _runs(client, "none")
    assert [v.scheduled_at for v in none] == [now]  # 0.2 s late: on time, the rest missed
    # A tick later than half its period (at most 60 s) is missed under `none`.
    await store.fire_due(pipelines=["tick"], now=now + 1.7, build=_build())
    assert [v.scheduled_at for v in await _runs(client, "none")] == [now]
    assert [v.scheduled_at for v in await _runs(client, "last")] == [now, now + 1]
    assert (await client.get_schedule("none")).next_fire_at == now + 2


@pytest.mark.asyncio
async def test_overlap_skip_queue_allow(store: Any) -> None:
    client = dp.Client(store)
    now = float(int(time.time()))
    for name, overlap in (("skip", "skip"), ("queue", "queue"), ("allow", "allow")):
        await _add(client, name, dp.Every("1s", overlap=overlap), first=now)
    await store.fire_due(pipelines=["tick"], now=now, build=_build())
    # Every first run is pending (no worker): it "still goes" at the next ticks.
    await store.fire_due(pipelines=["tick"], now=now + 2, build=_build())
    assert [v.scheduled_at for v in await _runs(client, "skip")] == [now]
    assert (await client.get_schedule("skip")).skipped == 2
    assert [v.scheduled_at for v in await _runs(client, "queue")] == [now]
    queued = await client.get_schedule("queue")
    assert queued.next_fire_at == now + 1 and queued.skipped == 0  # the tick waits
    assert await store.next_schedule_at(["tick"]) != now + 1  # it does not keep firers busy
    assert [v.scheduled_at for v in await _runs(client, "allow")] == [now, now + 2]
    # The queue's run ends: its waiting tick starts (catch-up `last`: the latest one).
    first = (await _runs(client, "queue"))[0].run_id
    await store.finish_unleased(
        first,
        status="completed",
        event={"kind": "run_completed", "attempt": 0, "data": None},
        now=now + 2.5,
        expect=["pending"],
    )
    await store.fire_due(pipelines=["tick"], now=now + 2.6, build=_build())
    assert [v.scheduled_at for v in await _runs(client, "queue")] == [now, now + 2]


@pytest.mark.asyncio
async def test_client_schedule_methods(store: Any) -> None:
    client = dp.Client(store)
    view = await client.add_schedule(
        "nightly", load_target(TICK), dp.Cron("0 3 * * *", tz="Europe/Berlin", inputs={"n": 2})
    )
    assert view.description == "cron '0 3 * * *' Europe/Berlin" and view.inputs == {"n": 2}
    assert view.next_fire_at == sch.next_tick("cron", "0 3 * * *", "Europe/Berlin", time.time())
    assert [v.name for v in await client.list_schedules()] == ["nightly"]
    await client.pause_schedule("nightly")
    assert (await client.get_schedule("nightly")).paused
    assert await store.next_schedule_at(["tick"]) is None  # a paused schedule fires nothing
    await client.resume_schedule("nightly")
    assert not (await client.get_schedule("nightly")).paused
    run_id = await client.trigger_schedule("nightly")
    run = await client.get(run_id)
    assert run.schedule == "nightly" and run.inputs == {"n": 2} and run.status == "pending"
    assert (await client.get_schedule("nightly")).last_run_id == run_id
    await client.delete_schedule("nightly")
    assert await client.list_schedules() == []
    assert (await client.get(run_id)).run_id == run_id  # its runs stay


@pytest.mark.asyncio
async def test_bad_schedules_are_refused_and_change_nothing(store: Any) -> None:
    client = dp.Client(store)
    await client.add_schedule("taken", TICK, dp.Every("1h"))
    before = await client.list_schedules()
    refusals = [
        (lambda: dp.Cron("0 25 * * *"), "the hour field '25'"),
        (lambda: dp.Cron("0 3 * *"), "has 4 fields, not 5"),
        (lambda: dp.Cron("0 3 * * *", tz="Nowhere/City"), "time zone 'Nowhere/City' is unknown"),
        (lambda: dp.Every("fortnight"), "interval 'fortnight' does not parse"),
        (lambda: dp.Every("1h", overlap="sometimes"), "overlap 'sometimes' is unknown"),
    ]
    for make, said in refusals:
        with pytest.raises(dp.ConfigError, match=said):
            make()
    with pytest.raises(dp.ConfigError, match="a schedule named 'taken' exists"):
        await client.add_schedule("taken", TICK, dp.Every("5m"))
    with pytest.raises(dp.ConfigError, match="has no pipeline 'nope'"):
        await client.add_schedule("new", f"{PIPELINES / 'scheduled.py'}:nope", dp.Every("5m"))
    with pytest.raises(dp.ConfigError, match="has no input 'm'"):
        await client.add_schedule("new", TICK, dp.Every("5m", inputs={"m": 1}))
    with pytest.raises(dp.ConfigError, match="schedule name 'a b' is not usable"):
        await client.add_schedule("a b", TICK, dp.Every("5m"))
    for method in (client.pause_schedule, client.trigger_schedule, client.delete_schedule):
        with pytest.raises(dp.ConfigError, match="no schedule named 'ghost'"):
            await method("ghost")
    assert await client.list_schedules() == before


@pytest.mark.asyncio
async def test_schedules_declared_in_code_are_upserted_by_workers(store: Any) -> None:
    from durapipe._clock import SYSTEM_CLOCK
    from durapipe._worker.schedules import Scheduler

    client = dp.Client(store)

    def declared(spec: Any, name: str = "coded") -> Any:
        async def coded(n: int = 0) -> int:
            return n

        return dp.pipeline(name=name, schedule=spec)(coded)

    async def declare(*pdefs: Any) -> None:
        s = Scheduler(
            store,
            pipelines={p.name: p for p in pdefs},
            owner="wkr_test",
            clock=SYSTEM_CLOCK,
            on_fired=lambda: None,
        )
        await s.declare()

    await declare(declared(dp.Every("1h", inputs={"n": 1})))
    view = await client.get_schedule("coded")
    assert (view.source, view.spec, view.inputs) == ("code", "3600", {"n": 1})
    await client.pause_schedule("coded")
    await declare(declared(dp.Every("1h", inputs={"n": 1})))  # unchanged: left as it is
    assert await client.get_schedule("coded") == (await client.list_schedules())[0]
    await declare(declared(dp.Every("2h", catch_up="all", inputs={"n": 2})))  # changed code
    view = await client.get_schedule("coded")
    assert (view.spec, view.catch_up, view.inputs, view.paused) == ("7200", "all", {"n": 2}, True)
    assert view.next_fire_at == sch.next_tick("every", "7200", "UTC", time.time())
    # A schedule added at runtime under a pipeline's name is not overwritten by the code's.
    await client.add_schedule("taken", TICK, dp.Every("5m"))
    await declare(declared(dp.Every("1s"), name="taken"))
    assert (await client.get_schedule("taken")).source == "api"
    assert (await client.get_schedule("taken")).spec == "300"


@pytest.mark.asyncio
async def test_workers_declaring_the_same_schedule_at_once(db_url: str) -> None:
    from durapipe._clock import SYSTEM_CLOCK
    from durapipe._worker.schedules import Scheduler

    async def together(n: int = 0) -> int:
        return n

    pdef = dp.pipeline(name="together", schedule=dp.Every("1m"))(together)
    stores = [await open_store(db_url) for _ in range(4)]
    try:
        for _ in range(3):  # a few rounds: the race is between the look and the insert
            await asyncio.gather(
                *(
                    Scheduler(
                        s,
                        pipelines={"together": pdef},
                        owner="wkr_test",
                        clock=SYSTEM_CLOCK,
                        on_fired=lambda: None,
                    ).declare()
                    for s in stores
                )
            )
            names = [v.name for v in await dp.Client(stores[0]).list_schedules()]
            assert names == ["together"]
            await stores[0].delete_schedule("together")
    finally:
        for s in stores:
            await s.close()
