"""What the web UI's actions of issue #20 ask of the Client: pages and counts of runs by tag,
and who sent a message (send by=)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PIPELINES

from durapipe._client import AdminClient
from durapipe._store import pages
from durapipe.errors import InvalidInput

TICKING = f"{PIPELINES / 'ui.py'}:ticking"


@pytest.mark.asyncio
@pytest.mark.parametrize("few", [5000, 1], ids=["rare-tags", "common-tags"])
async def test_pages_and_counts_by_tags_are_keyset_and_anded(
    store: Any, few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways a tag is looked up (by its index, or run by run) give the same pages."""
    monkeypatch.setattr(pages, "FEW", few)
    client = AdminClient(store)
    blue = [
        await client.start(TICKING, n=i, tags={"team": "blue", "env": "prod"}) for i in range(5)
    ]
    red = await client.start(TICKING, n=9, tags={"team": "red", "env": "prod"})
    await client.start(TICKING, n=9)  # no tags
    both = {"team": "blue", "env": "prod"}
    seen: list[str] = []
    before = None
    while page := await client.page(tags=both, before=before, limit=2):
        seen += [r.id for r in page]
        before = (page[-1].created_at, page[-1].id)
    assert seen == list(reversed(blue))
    assert [r.id for r in await client.page(tags={"env": "prod"}, limit=2)] == [red, blue[-1]]
    assert await client.page(tags={"team": "blue", "env": "dev"}) == []
    assert await client.counts(pipeline=None, roots_only=False, tags=both) == {"pending": 5}
    assert await client.counts(pipeline=None, roots_only=False) == {"pending": 7}
    assert (await client.tags_of([red, blue[0]]))[red] == {"team": "red", "env": "prod"}
    with pytest.raises(InvalidInput):
        await client.page(tags={"not a key": "x"})


@pytest.mark.asyncio
async def test_who_sent_a_message_is_in_the_runs_log(store: Any) -> None:
    client = AdminClient(store)
    rid = await client.start(TICKING, n=1)
    await client.send(rid, "go", {"ok": True}, by="ui:10.0.0.7")
    await client.send(rid, "go", 2)  # without by=, nothing is noted
    row = await client.row(rid)
    lines = [r.line for r in await client.read_logs(row.root_run_id, after_id=0)]
    assert lines == ["Message 'go' sent by ui:10.0.0.7"]
    with pytest.raises(InvalidInput, match="by= is who acts"):
        await client.send(rid, "go", 3, by="two\nlines")
