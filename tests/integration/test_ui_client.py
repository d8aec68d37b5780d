"""What the web UI asks of the Client: who steered a run (by=), and keyset pages of runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe._client import AdminClient
from durapipe.errors import InvalidInput

TICKING = f"{PIPELINES / 'ui.py'}:ticking"


async def _log(client: AdminClient, run_id: str) -> list[str]:
    row = await client.row(run_id)
    return [r.line for r in await client.read_logs(row.root_run_id, after_id=0)]


@pytest.mark.asyncio
async def test_who_steered_a_run_is_recorded(store: Any) -> None:
    client = AdminClient(store)
    rid = await client.start(TICKING, n=2)
    assert await client.stop(rid, by="ui:10.0.0.7") == "stopped"  # nobody held it
    stopped = [e for e in await client.events(rid) if e["kind"] == "run_stopped"]
    assert stopped[-1]["data"] == {"by": "ui:10.0.0.7"}
    await client.send_input(rid, "approve", True, by="ui:10.0.0.8")
    await client.resume(rid, by="alice")
    assert await client.cancel(rid, here=False, by="bob") == "queued"
    assert await _log(client, rid) == [
        "Stop requested by ui:10.0.0.7",
        "Input 'approve' sent by ui:10.0.0.8",
        "Resumed by alice",
        "Cancel requested by bob",
    ]
    for bad in ("", "x" * 201, "two\nlines"):
        with pytest.raises(InvalidInput, match="by= is who acts"):
            await client.stop(rid, by=bad)
    # Without by=, nothing is added (the CLI's steering is unchanged).
    rid2 = await client.start(TICKING, n=2)
    await client.stop(rid2)
    assert await _log(client, rid2) == []
    assert [e for e in await client.events(rid2) if e["kind"] == "run_stopped"][0].get(
        "data"
    ) is None


@pytest.mark.asyncio
async def test_pages_of_runs_are_keyset_and_filtered(store: Any) -> None:
    client = AdminClient(store)
    ids = [await client.start(TICKING, n=i) for i in range(7)]
    newest_first = list(reversed(ids))
    seen: list[str] = []
    before = None
    while True:
        page = await client.page(before=before, limit=3)
        if not page:
            break
        seen += [r.id for r in page]
        before = (page[-1].created_at, page[-1].id)
    assert seen == newest_first
    rows = {r.id: r for r in await client.page(limit=100)}
    middle = rows[ids[3]].created_at
    assert [r.id for r in await client.page(since=middle)] == newest_first[:4]
    assert [r.id for r in await client.page(until=middle)] == newest_first[4:]
    assert await client.page(status="completed") == []
    assert len(await client.page(pipeline="ticking", roots_only=True)) == 7
    with pytest.raises(InvalidInput, match="unknown status"):
        await client.page(status="nope")
    assert json.loads(rows[ids[0]].inputs) == {"n": 0}


def test_sync_client_passes_who(db_url: str) -> None:
    with dp.SyncClient(db_url) as client:
        rid = client.start(TICKING, n=1)
        client.stop(rid, by="cron")
        events = client.events(rid)
    assert events[-1]["kind"] == "run_stopped" and events[-1]["data"] == {"by": "cron"}


@pytest.mark.asyncio
async def test_counts_by_status_can_be_capped(store: Any) -> None:
    """`durapipe list`'s summary reads at most cap + 1 runs of each status: exact below the cap,
    cap + 1 ("more") above it, under the same filters as the exact count."""
    client = AdminClient(store)
    ids = [await client.start(TICKING, n=1) for _ in range(5)]
    await client.stop(ids[0])  # pending runs nobody holds stop at once
    exact = await store.count_by_status(roots_only=True)
    assert exact == {"pending": 4, "stopped": 1}
    assert await store.count_by_status(roots_only=True, cap=10) == exact
    assert await store.count_by_status(roots_only=True, cap=2) == {"pending": 3, "stopped": 1}
    assert await store.count_by_status(pipeline="nope", cap=2) == {}
    assert await store.count_by_status(statuses=["stopped"], cap=0) == {"stopped": 1}
