"""Child handles, continue-as-new and tags through the Client and the testing kit, on SQLite and
PostgreSQL (issue #16, items 4-6); the CLI side is tests/acceptance/test_handles.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe.errors import InvalidInput
from durapipe.testing import run_pipeline

sys.path.insert(0, str(PIPELINES))
import handles as H  # noqa: E402

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def _side_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDE_DIR", str(tmp_path))


async def test_a_chain_is_one_run_to_the_client(store: Any) -> None:
    client = dp.Client(store)
    view = await run_pipeline(store, H.chain, links=5)
    assert view.status == "completed" and view.output == 5 and view.inputs["n"] == 4
    first = (await client.list(pipeline="chain", status="continued"))[-1]
    assert first.inputs == {"links": 5} and first.status == "continued"
    assert await client.result(first.run_id, timeout=5) == 5  # followed to the chain's end
    assert [v.run_id for v in await client.list(pipeline="chain")] == [view.run_id]
    assert len(await client.list(pipeline="chain", status="continued")) == 4
    assert view.continued_from is not None and view.tags == {"chain": "yes"}
    kinds = [e["kind"] for e in await client.events(first.run_id)]
    assert kinds[-1] == "run_continued" and len(kinds) <= 5  # a fresh, short history each


async def test_tags_at_start_and_from_the_pipeline_are_anded(store: Any) -> None:
    client = dp.Client(store)
    a = await client.start(H.tagged, customer="acme", tags={"env": "prod", "n": 3})
    b = await client.start(H.tagged, customer="zeta", tags={"env": "prod"})
    ran = await run_pipeline(store, H.tagged, customer="acme")

    async def ids(**tags: str) -> set[str]:
        return {v.run_id for v in await client.list(tags=tags)}

    assert await ids(env="prod") == {a, b}
    assert await ids(env="prod", n="3") == {a}
    assert await ids(customer="acme", tier="platinum") == {ran.run_id}
    assert await ids(tier="gold") == set()
    assert (await client.get(a)).tags == {"env": "prod", "n": "3"}
    assert ran.tags == {"customer": "acme", "tier": "platinum"}


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ({"bad key": "x"}, "not a short identifier"),
        ({"": "x"}, "not a short identifier"),
        ({"k" * 65: "x"}, "not a short identifier"),
        ({"env": "x" * 201}, "at most 200 characters"),
        ({"env": ["x"]}, "a value is text"),
    ],
)
async def test_bad_tags_start_nothing(store: Any, tags: dict[str, Any], says: str) -> None:
    client = dp.Client(store)
    with pytest.raises(InvalidInput, match=says):
        await client.start(H.tagged, customer="x", tags=tags)
    with pytest.raises(InvalidInput, match=says):
        await client.list(tags=tags)
    assert await client.list() == []


async def test_handles_started_and_awaited_in_the_testing_kit(store: Any, tmp_path: Path) -> None:
    (tmp_path / "go").write_text("")
    view = await run_pipeline(store, H.five_kids)
    assert view.status == "completed" and view.output == 100
    kids = [v for v in await dp.Client(store).list() if v.parent_run_id == view.run_id]
    assert len(kids) == 5 and all(k.status == "completed" for k in kids)
