"""`durapipe gc` deletes in batches (issue #21): what goes and what stays, batch by batch, and a
gc killed half-way leaves every run whole or gone, and finishes when run again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, cli_env, wait_until
from sqlalchemy import func, insert, select

from durapipe._store import open_store
from durapipe._store import schema as S

DAY = 86400.0
OWNED = (S.events, S.inputs, S.messages, S.published, S.logs, S.tags, S.forks)


def _run(rid: str, status: str, finished_at: float | None, **extra: Any) -> dict[str, Any]:
    at = (finished_at or time.time()) - 10
    row = {
        "id": rid, "pipeline": "p", "version": "1", "entrypoint": "x.py:p", "pinned": False,
        "status": status, "inputs": "{}", "output": None, "root_run_id": rid, "depth": 0,
        "prefix": "p", "created_at": at, "updated_at": at, "finished_at": finished_at,
        "attempt": 1,
    }  # fmt: skip
    row.update(extra)
    return row


def _owned(rid: str, root: str, n_events: int = 3) -> dict[Any, list[dict[str, Any]]]:
    """A row in every table that holds something of run ``rid``."""
    now = time.time()
    return {
        S.events: [
            {
                "run_id": rid,
                "seq": i,
                "kind": "step_completed",
                "step": str(i),
                "name": "s",
                "label": f"s_{i}",
                "at": now,
                "attempt": 1,
                "data": "{}",
            }
            for i in range(1, n_events + 1)
        ],  # fmt: skip
        S.inputs: [{"run_id": rid, "name": "go", "value": "1", "created_at": now}],
        S.messages: [{"run_id": rid, "topic": "t", "value": "1", "created_at": now}],
        S.published: [{"run_id": rid, "key": "k", "value": "1", "seq": 1, "updated_at": now}],
        S.logs: [
            {
                "run_id": rid,
                "root_run_id": root,
                "step": "1",
                "prefix": "p",
                "stream": "out",
                "at": now,
                "line": "hello",
                "attempt": 1,
            }
        ],  # fmt: skip
        S.tags: [{"run_id": rid, "key": "env", "value": "prod"}],
        S.forks: [
            {
                "run_id": rid,
                "source_run_id": "run_src",
                "step": "1",
                "created_at": now,
                "created_by": "t",
            }
        ],  # fmt: skip
    }


async def _fill(store: Any, runs: list[dict[str, Any]], n_events: int = 3) -> None:
    def tx(conn: Any) -> None:
        conn.execute(insert(S.runs), runs)
        rows: dict[Any, list[dict[str, Any]]] = {t: [] for t in OWNED}
        for run in runs:
            for table, more in _owned(run["id"], run["root_run_id"], n_events).items():
                rows[table] += more
        for table, more in rows.items():
            conn.execute(insert(table), more)

    await store._write(tx)


async def _ids(store: Any) -> dict[str, set[str]]:
    """Run ids found in runs and in every table that holds something of a run."""

    def tx(conn: Any) -> dict[str, set[str]]:
        out = {"runs": {r for (r,) in conn.execute(select(S.runs.c.id))}}
        for t in OWNED:
            out[t.name] = {r for (r,) in conn.execute(select(t.c.run_id).distinct())}
        return out

    return await store.run_read(tx)


@pytest.mark.asyncio
async def test_gc_deletes_old_finished_runs_with_all_they_own_a_batch_at_a_time(
    store: Any,
) -> None:
    now = time.time()
    old = [
        _run(f"run_old_{i:02d}", s, now - (40 + i) * DAY)
        for i, s in enumerate(["completed", "failed", "cancelled", "aborted", "timed_out"] * 5)
    ]
    # A child of an old run, itself old and finished: it goes, though its root stays below.
    old.append(_run("run_old_child", "completed", now - 50 * DAY, root_run_id="run_kept_root"))
    # A link of a chain that continued as new long ago goes; its live link stays.
    old.append(_run("run_old_link", "continued", now - 60 * DAY, chain_id="run_old_link"))
    kept = [
        _run("run_recent", "completed", now - 5 * DAY),
        _run("run_kept_root", "running", None, created_at=now - 90 * DAY),
        _run("run_live_link", "running", None, chain_id="run_old_link"),
        _run("run_queued", "queued", None, queue="q", created_at=now - 90 * DAY),
        _run("run_held", "pending", None, created_at=now - 90 * DAY),
        _run("run_waiting", "waiting", None, created_at=now - 90 * DAY),
        _run("run_stopped", "stopped", None, created_at=now - 90 * DAY),
    ]
    await _fill(store, old + kept)
    seen: list[int] = []

    n = await store.gc(older_than=now - 30 * DAY, batch=10, progress=seen.append)

    assert n == len(old) == 27
    assert seen == [10, 20, 27]  # three transactions of at most 10 runs
    ids = await _ids(store)
    want = {r["id"] for r in kept}
    for name, found in ids.items():
        # forks name the new run; every other table names the run the row belongs to
        assert found == want, name

    def log_roots(conn: Any) -> list[tuple[str, str]]:
        return list(conn.execute(select(S.logs.c.run_id, S.logs.c.root_run_id)).all())

    assert ("run_kept_root", "run_kept_root") in await store.run_read(log_roots)
    assert await store.gc(older_than=now - 30 * DAY, batch=10) == 0


@pytest.mark.asyncio
async def test_gc_deletes_a_batch_that_fills_exactly_then_stops(store: Any) -> None:
    now = time.time()
    await _fill(store, [_run(f"run_{i}", "completed", now - DAY - i) for i in range(20)])
    seen: list[int] = []
    assert await store.gc(older_than=now, batch=10, progress=seen.append) == 20
    assert seen == [10, 20, 20]  # the last batch finds none left
    assert (await _ids(store))["runs"] == set()


GC_CHILD = """
import asyncio, sys
from durapipe._store import open_store

async def main():
    store = await open_store(sys.argv[1])
    await store.gc(older_than=float(sys.argv[2]), batch=50,
                   progress=lambda n: print(n, flush=True))

asyncio.run(main())
"""


def test_gc_killed_half_way_leaves_runs_whole_or_gone_and_runs_again(
    db_url: str, tmp_path: Path
) -> None:
    now = time.time()
    n_old, n_events = 3000, 10
    old = [_run(f"run_old_{i:05d}", "completed", now - 40 * DAY + i) for i in range(n_old)]
    kept = [_run(f"run_new_{i}", "completed", now - DAY) for i in range(5)]

    async def fill() -> None:
        store = await open_store(db_url)
        try:
            await _fill(store, old + kept, n_events)
        finally:
            await store.close()

    asyncio.run(fill())
    cutoff = now - 30 * DAY
    child = subprocess.Popen(
        [sys.executable, "-c", GC_CHILD, db_url, repr(cutoff)],
        env=cli_env(db_url),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = wait_until(child.stdout.readline, timeout=60, what="gc's first batch")
        assert int(first) == 50
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    async def check() -> set[str]:
        store = await open_store(db_url)
        try:
            ids = await _ids(store)

            def events_per_run(conn: Any) -> set[int]:
                e = S.events.c
                q = select(func.count()).select_from(S.events).group_by(e.run_id)
                return {n for (n,) in conn.execute(q)}

            sizes = await store.run_read(events_per_run)
        finally:
            await store.close()
        left = ids["runs"]
        for name, found in ids.items():
            assert found == left, name  # nothing of a deleted run is left behind
        assert sizes == {n_events}  # and every run left is whole
        return left

    left = asyncio.run(check())
    assert {r["id"] for r in kept} <= left
    assert len(left) < n_old + len(kept)  # the first batch was deleted
    gone = n_old + len(kept) - len(left)

    again = subprocess.run(
        [sys.executable, "-m", "durapipe", "gc", "--older-than", "30d"],
        env=cli_env(db_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"deleted {n_old - gone} finished runs"
    assert asyncio.run(check()) == {r["id"] for r in kept}


@pytest.mark.asyncio
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no autovacuum
async def test_gc_vacuums_as_it_goes_on_postgresql(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc VACUUMs the tables after each share of the runs and at the end, so that autovacuum,
    which writes without handing its pages to the disk, does not run behind it."""
    from durapipe._store import runs as R

    monkeypatch.setattr(R, "GC_VACUUM_MIN", 100)
    monkeypatch.setattr(R, "GC_VACUUM_TAIL", 10)
    now = time.time()
    await _fill(store, [_run(f"run_{i:03d}", "completed", now - DAY - i) for i in range(250)])
    names = [t.name for t in (*OWNED, S.runs)]

    async def vacuums() -> dict[str, int]:
        q = "SELECT relname, vacuum_count FROM pg_stat_user_tables WHERE relname LIKE 'durapipe%'"
        rows = await store.run_read(lambda c: c.exec_driver_sql(q).all())
        return {name: int(n) for name, n in rows}

    before = await vacuums()
    assert await store.gc(older_than=now, batch=50) == 250

    # At 100 deleted runs, at 200, and at the end. The statistics reach the view shortly after
    # the VACUUM's session ends: wait for them, within a deadline.
    deadline = time.monotonic() + 15
    while True:
        after = await vacuums()
        if all(after[n] - before.get(n, 0) >= 3 for n in names):
            break
        assert time.monotonic() < deadline, (before, after)
        await asyncio.sleep(0.1)
    assert (await _ids(store))["runs"] == set()
