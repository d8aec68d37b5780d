"""Fork and edit against the engine and the store, on SQLite and PostgreSQL: an edit's value
replays and cuts the later calls in program order (gather branches too), and a fork is written
in one transaction or not at all."""

from __future__ import annotations

from typing import Any

import pytest

import durapipe as dp
from durapipe._kinds import EventKind
from durapipe._records import new_run, run_event
from durapipe.testing import resume_run, run_pipeline

pytestmark = pytest.mark.asyncio

CALLS: list[str] = []
BAD: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    BAD.clear()


@dp.step
def s(tag: str) -> str:
    CALLS.append(tag)
    if tag in BAD:
        raise ValueError(f"{tag} is bad")
    return tag


@dp.pipeline(name="repair_chain", version="1")
async def chain(first: str = "bad") -> list[str]:
    a = await s(first)  # 1
    b = await s(f"b-{a}")  # 2
    c = await s(f"c-{b}")  # 3
    return [a, b, c]


@dp.pipeline(version="1")
async def fan() -> list[Any]:
    x = await s("x")  # 1
    g = await dp.gather(s("g0"), s("g1"))  # 2/0/1, 2/1/1
    after = await s(f"after-{g[0]}")  # 3
    return [x, g, after]


async def test_edit_of_a_failed_run_replays_the_new_value_and_reruns_what_followed(
    store: Any,
) -> None:
    BAD.add("c-b-bad")
    view = await run_pipeline(store, chain, run_id="r")
    assert view.status == "failed" and CALLS == ["bad", "b-bad", "c-b-bad"]
    client = dp.Client(store)
    done = await client.edit("r", "1", "good", reason="typo", by="alice")
    assert done["old"] == {"kind": "step_completed", "data": {"result": "bad"}}
    assert done["new"] == "good" and done["by"] == "alice"
    view = await resume_run(store, chain, "r")
    assert view.status == "completed" and view.output == ["good", "b-good", "c-b-good"]
    assert CALLS[3:] == ["b-good", "c-b-good"]  # the edited step did not run again
    # Every original event is still there, the edit after them.
    kinds = [e["kind"] for e in await client.events("r")]
    assert kinds.count("step_completed") == 2 + 2 and kinds.count("step_failed") == 1
    assert kinds.count("result_edited") == 1


async def test_edit_of_the_failed_step_itself_keeps_what_came_before(store: Any) -> None:
    BAD.add("c-b-bad")
    await run_pipeline(store, chain, run_id="r")
    await dp.Client(store).edit("r", "s_3", "fixed by hand", reason="checked", rerun_after=False)
    view = await resume_run(store, chain, "r")
    assert view.output == ["bad", "b-bad", "fixed by hand"]
    assert CALLS == ["bad", "b-bad", "c-b-bad"]  # nothing ran again


async def test_edit_in_a_gather_branch_cuts_later_branches_and_calls(store: Any) -> None:
    BAD.add("after-g0")
    await run_pipeline(store, fan, run_id="f")
    assert sorted(CALLS) == sorted(["x", "g0", "g1", "after-g0"])
    CALLS.clear()
    await dp.Client(store).edit("f", "2/0/1", "G0", reason="branch 0 was wrong")
    view = await resume_run(store, fan, "f")
    assert view.output == ["x", ["G0", "g1"], "after-G0"]
    assert sorted(CALLS) == ["after-G0", "g1"]  # x and branch 0 were kept; the rest re-ran


async def test_fork_copies_the_calls_before_the_point_and_links_back(store: Any) -> None:
    BAD.add("c-b-bad")
    await run_pipeline(store, chain, run_id="r")
    client = dp.Client(store)
    new = await client.fork("r", new_run_id="r2", inputs={"first": "ok"})
    CALLS.clear()
    BAD.clear()
    view = await resume_run(store, chain, new)
    # From the failed step: steps 1 and 2 replay their recorded results (the old input's).
    assert view.output == ["bad", "b-bad", "c-b-bad"] and CALLS == ["c-b-bad"]
    assert view.inputs == {"first": "ok"}
    source, forks = await store.fork_links("r")
    assert source is None and [f.run_id for f in forks] == ["r2"]
    assert (await store.fork_links("r2"))[0].source_run_id == "r"
    assert (await client.get("r")).status == "failed"  # untouched


def _source(run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    row = new_run(
        run_id=run_id, pipeline="repair_chain", version="1", entrypoint="x.py:chain", pinned=False,
        inputs="{}", now=1.0, owner=None, ttl=30,
    )  # fmt: skip
    return row, run_event(run_id, 1, EventKind.RUN_STARTED, at=1.0, attempt=0)


async def test_a_fork_that_fails_mid_write_leaves_nothing(store: Any) -> None:
    row, started = _source("src")
    await store.create_run(row, [started])
    new, first = _source("copy")
    # The second event repeats seq 1: the insert of the events fails after the run's row.
    twice = [first, {**first, "kind": EventKind.STEP_STARTED, "step": "1"}]
    link = {"run_id": "copy", "source_run_id": "src", "step": "1", "created_at": 1.0,
            "created_by": "t"}  # fmt: skip
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.fork_run(
            source_run_id="src", source_last_seq=1, row=new, events=twice, link=link, now=2.0
        )
    assert await store.get_run("copy") is None
    assert await store.events("copy") == []
    assert await store.fork_links("src") == (None, [])
    # The same fork, whole, is written; then the id is taken, and a stale read is refused.
    ok = dict(source_run_id="src", row=new, events=[first], link=link, now=2.0)
    assert await store.fork_run(source_last_seq=1, **ok) is None
    assert await store.fork_run(source_last_seq=1, **ok) == "exists"
    assert await store.fork_run(source_last_seq=0, **ok) == "changed"
    assert [f.run_id for f in (await store.fork_links("src"))[1]] == ["copy"]
