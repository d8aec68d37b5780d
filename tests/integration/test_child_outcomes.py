"""A parent waiting for many children asks for their outcomes together (durapipe/_worker/
outcomes.py): one read of the runs table answers every wait a nudge wakes, and a child that
continued as new is followed to its chain's live link (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import run_pipeline

if not any(ep.value == "durapipe.testing" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["durapipe.testing"]


@pytest.fixture(params=["sqlite", "postgresql"])
def kit_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        if server is None:
            pytest.skip("no PostgreSQL server available")
        monkeypatch.setenv("DURAPIPE_TEST_DATABASE_URL", server)
    else:
        monkeypatch.delenv("DURAPIPE_TEST_DATABASE_URL", raising=False)
    return str(request.param)


both = pytest.mark.usefixtures("kit_database")


@dp.step
async def triple(i: int) -> int:
    return 3 * i


@dp.pipeline(name="outcomes_child", version="1")
async def child(i: int) -> int:
    return await triple(i)


@dp.pipeline(name="outcomes_parent", version="1")
async def parent(n: int) -> int:
    return sum(await dp.gather(*(dp.run_subpipeline(child, i=i) for i in range(n))))


@dp.pipeline(name="outcomes_relay", version="1")
async def relay(i: int, hops: int = 1) -> int:
    if hops:
        await dp.continue_as_new(i=i, hops=hops - 1)
    return await triple(i)


@dp.pipeline(name="outcomes_relay_parent", version="1")
async def relay_parent() -> list[int]:
    return await dp.gather(dp.run_subpipeline(relay, i=1), dp.run_subpipeline(relay, i=2, hops=2))


class CountingReads:
    """Passes ``live_links`` through to the real store, counting the reads and the ids asked."""

    def __init__(self, store: Any) -> None:
        self.store, self.reads, self.ids = store, 0, 0
        self.real = store.live_links

    async def __call__(self, run_ids: list[str]) -> Any:
        self.reads += 1
        self.ids += len(run_ids)
        return await self.real(run_ids)


@both
@pytest.mark.asyncio
async def test_a_gather_of_many_children_reads_their_outcomes_together(
    durapipe_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 300
    spy = CountingReads(durapipe_store)
    monkeypatch.setattr(durapipe_store, "live_links", spy)
    view = await run_pipeline(durapipe_store, parent, n=n)
    assert view.status == "completed", view.error
    assert view.output == 3 * sum(range(n))
    children = await dp.Client(durapipe_store).list(limit=1000)
    assert sum(1 for r in children if r.parent_run_id == view.run_id) == n
    # Each wait looks at least once, but the looks of the same moment share a read: asked one
    # by one, there would be at least n reads.
    assert spy.ids >= n
    assert spy.reads < n / 2, (spy.reads, spy.ids)


@both
@pytest.mark.asyncio
async def test_children_that_continued_as_new_are_followed_to_their_live_link(
    durapipe_store: Any,
) -> None:
    view = await run_pipeline(durapipe_store, relay_parent)
    assert view.status == "completed", view.error
    assert view.output == [3, 6]
    firsts = [
        json.loads(e.data)["child_run_id"]
        for e in await durapipe_store.events(view.run_id)
        if e.kind == "child_started"
    ]
    assert len(firsts) == 2
    links = await durapipe_store.live_links([*firsts, "run_no_such_run"])
    assert set(links) == set(firsts)  # an unknown id is left out
    for first in firsts:
        live = links[first]
        assert live.id != first and live.status == "completed"
        assert live.chain_id == first
