"""dp.SyncClient drives runs from plain synchronous code (a Flask view, a script), on SQLite and
PostgreSQL: start, wait for input, send it from another thread while one waits for the result,
list, events, stop, resume, cancel; and dp.run_subpipeline takes a child's inputs by position."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import run_pipeline
from tests.conftest import wait_until
from tests.pipelines import api_sync

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = str(ROOT / "tests" / "pipelines" / "api_sync.py")


def parked(client: dp.SyncClient, run_id: str, status: str) -> bool:
    view = client.get(run_id)
    return view.status == status and view.lease_owner is None


def test_sync_client_drives_a_run_that_a_worker_executes(db_url: str, dp_spawn: Any) -> None:
    worker = dp_spawn("worker", "-m", PIPELINES, "--suspend-after", "0.5")
    threads_before = set(threading.enumerate())
    with dp.SyncClient(db_url) as client:
        own_threads = set(threading.enumerate()) - threads_before  # its event loop's thread
        run_id = client.start(api_sync.api_approve, word="hi", run_id="sync-1")
        assert client.start(api_sync.api_approve, word="hi", run_id="sync-1") == run_id
        # Steer it once the worker has parked it (suspended: no lease), a settled state.
        wait_until(lambda: parked(client, run_id, "waiting"), what="the run to wait, parked")

        results: list[Any] = []

        def wait_for_result() -> None:
            try:
                results.append(client.result(run_id, timeout=60))
            except BaseException as exc:  # reported by the assertion below
                results.append(exc)

        waiter = threading.Thread(target=wait_for_result)
        waiter.start()  # blocks in another thread while this one sends the input
        client.send_input(run_id, "approve", True)
        waiter.join(timeout=90)
        assert results == [{"said": True, "child": "HIHI"}]

        view = client.get(run_id)
        assert view.status == "completed" and view.inputs == {"word": "hi"}
        [child] = [v for v in client.list(pipeline="api_child")]
        assert child.parent_run_id == run_id and child.inputs == {"word": "hi", "times": 2}
        kinds = [e["kind"] for e in client.events(run_id)]
        assert "input_received" in kinds and "child_completed" in kinds
        with pytest.raises(dp.InvalidRunState):
            client.send_input(run_id, "approve", False)

        nap = client.start(api_sync.api_nap)
        wait_until(lambda: parked(client, nap, "sleeping"), what="the nap to sleep, parked")
        assert client.stop(nap) in ("stopped", "requested")
        wait_until(lambda: client.get(nap).status == "stopped", what="the nap to stop")
        client.resume(nap)
        wait_until(lambda: parked(client, nap, "sleeping"), what="the nap to sleep again")
        assert client.cancel(nap) in ("requested", "cancelled", "queued")
        wait_until(lambda: client.get(nap).status == "cancelled", what="the nap to be cancelled")
        with pytest.raises(dp.RunFailed):
            client.result(nap, timeout=5)
        with pytest.raises(dp.RunNotFound):
            client.get("no-such-run")
    client.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        client.get(run_id)
    assert own_threads
    wait_until(lambda: not any(t.is_alive() for t in own_threads), what="its thread to end")
    assert worker.poll() is None


def test_sync_client_works_where_an_event_loop_runs(db_url: str) -> None:
    import asyncio

    async def view() -> str:  # e.g. a sync helper called from async code
        with dp.SyncClient.connect(db_url) as client:
            return client.start("api_nap", run_id="from-a-loop")

    assert asyncio.run(view()) == "from-a-loop"
    with dp.SyncClient(db_url) as client:
        assert client.get("from-a-loop").status == "pending"


def test_sync_client_on_a_bad_url_is_a_config_error_and_leaves_no_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with pytest.raises(dp.ConfigError, match="does not exist"):
        dp.SyncClient(f"sqlite:///{tmp_path}/missing/folder/x.db")
    wait_until(
        lambda: not [t for t in set(threading.enumerate()) - before if t.is_alive()],
        what="its thread to end",
    )


@pytest.mark.asyncio
async def test_run_subpipeline_inputs_by_position(store: Any) -> None:
    view = await run_pipeline(store, api_sync.api_too_many)
    assert view.status == "failed"
    assert "takes 2 input(s) by position, got 3" in view.error["message"]
