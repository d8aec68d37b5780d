"""Timers taken on time (issue #21): real worker processes, both databases.

A worker reads the timers due within the next seconds and claims each just before it is due (it
sleeps the rest in memory, leased). These tests pin what must not change with that: a sleeping
run is woken by a worker that was already running; with several workers each woken run is run
by one of them, once; and a worker killed while holding timers it took early loses nothing.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path
from typing import Any

from conftest import PIPELINES, client_call, side_effects, wait_until

WORK = str(PIPELINES / "work.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _worker(dp_spawn: Any, *extra: str) -> Any:
    return dp_spawn("worker", "-m", WORK, "--suspend-after", "0.5", *extra, env=FAST)


def _start_naps(db_url: str, seconds: list[float]) -> list[str]:
    from durapipe._definition import load_target

    nap = load_target(f"{WORK}:nap")

    async def fn(c: Any) -> list[str]:
        return [await c.start(nap, seconds=s) for s in seconds]

    return client_call(db_url, fn)


def _rows(db_url: str, ids: list[str]) -> list[Any]:
    return client_call(db_url, lambda c: c.store.get_runs(ids))


def _kinds(db_url: str, rid: str) -> collections.Counter[str]:
    events = client_call(db_url, lambda c: c.store.events(rid))
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"{rid}: seq {seqs}"
    return collections.Counter(e.kind for e in events)


def _all(db_url: str, ids: list[str], status: str) -> bool:
    return all(r.status == status for r in _rows(db_url, ids))


def test_runs_sleeping_are_woken_once_each_by_workers_started_before(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    workers = [_worker(dp_spawn) for _ in range(2)]
    # Due over a second and a half, some at the same instant: both workers read them all.
    ids = _start_naps(db_url, [2.0 + (i % 8) * 0.2 for i in range(24)])
    wait_until(lambda: _all(db_url, ids, "completed"), timeout=60, what="the sleepers to wake")
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    assert {rid: effects[f"{rid} z1"] for rid in ids} == dict.fromkeys(ids, 1)  # one run each
    for rid in ids:
        kinds = _kinds(db_url, rid)
        assert kinds["timer_started"] == kinds["timer_fired"] == kinds["run_completed"] == 1
    for r in _rows(db_url, ids):
        assert r.recoveries == 0 and r.lease_owner is None
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(timeout=30) == 0


def test_a_worker_dead_with_timers_it_took_early_loses_nothing(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    ids = _start_naps(db_url, [6.0] * 5)
    a = _worker(dp_spawn)
    wait_until(lambda: _all(db_url, ids, "sleeping"), what="the runs to suspend")
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    # What a worker killed with timers taken early leaves in the database, exactly: their
    # leases (taken by a process that is gone), status sleeping, wake times to come.
    from durapipe._store.claims import ClaimFilter

    async def take_early(c: Any) -> list[str]:
        now = time.time()
        got = await c.store.claim_timers(
            ids,
            owner="wkr_killed",
            flt=ClaimFilter(pipelines=None),
            ttl=2,
            now=now,
            due_by=now + 30,
        )
        return [r.id for r in got.rows]

    assert sorted(client_call(db_url, take_early)) == sorted(ids)
    assert all(r.lease_owner == "wkr_killed" for r in _rows(db_url, ids))
    _worker(dp_spawn)  # takes them once the leases expire, and wakes each at its time
    wait_until(lambda: _all(db_url, ids, "completed"), timeout=120, what="another worker")
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    assert {rid: effects[f"{rid} z1"] for rid in ids} == dict.fromkeys(ids, 1)
    for rid in ids:
        assert _kinds(db_url, rid)["timer_fired"] == 1


def test_sigkill_of_a_worker_waking_timers_another_worker_wakes_the_rest(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    a = _worker(dp_spawn)
    ids = _start_naps(db_url, [2.0 + i * 0.1 for i in range(30)])
    wait_until(
        lambda: sum(r.status == "completed" for r in _rows(db_url, ids)) >= 5,
        timeout=60,
        what="worker A to wake the first runs",
    )
    a.send_signal(signal.SIGKILL)  # amid wake-ups: some taken early, some running, some not read
    a.wait(timeout=10)
    _worker(dp_spawn)
    wait_until(lambda: _all(db_url, ids, "completed"), timeout=120, what="worker B")
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    for rid in ids:
        assert 1 <= effects[f"{rid} z1"] <= 2  # a step in flight at the kill runs again
        assert _kinds(db_url, rid)["run_completed"] == 1
