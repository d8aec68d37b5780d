"""Many workers on one database: real worker processes, real SIGKILL/SIGSTOP, both databases."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PIPELINES,
    client_call,
    side_effects,
    stop_between_transactions,
    wait_until,
)

WORK = str(PIPELINES / "work.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _start_many(db_url: str, pipeline: str, count: int, **inputs: Any) -> list[str]:
    from durapipe._definition import load_target

    pdef = load_target(f"{WORK}:{pipeline}")

    async def fn(c: Any) -> list[str]:
        return [await c.start(pdef, **inputs) for _ in range(count)]

    return client_call(db_url, fn)


def _statuses(db_url: str) -> collections.Counter[str]:
    async def fn(c: Any) -> collections.Counter[str]:
        return collections.Counter(v.status for v in await c.list(limit=100000))

    return client_call(db_url, fn)


def _events(db_url: str, run_id: str) -> list[Any]:
    return client_call(db_url, lambda c: c.store.events(run_id))


def _assert_history_sound(db_url: str, run_ids: list[str]) -> None:
    for rid in run_ids:
        seqs = [e.seq for e in _events(db_url, rid)]
        assert seqs == list(range(1, len(seqs) + 1)), f"{rid}: seq {seqs}"


def _worker(dp_spawn: Any, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return dp_spawn("worker", "-m", WORK, *extra, env={**FAST, **(env or {})})


def test_three_workers_two_hundred_runs_each_step_once(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    ids = _start_many(db_url, "five", 200)
    workers = [_worker(dp_spawn, "--concurrency", "20") for _ in range(3)]
    wait_until(
        lambda: _statuses(db_url).get("completed") == 200,
        timeout=120,
        interval=0.3,
        what="200 runs to complete",
    )
    effects = side_effects(tmp_path, "effects")
    assert len(effects) == 1000
    assert collections.Counter(effects).most_common(1)[0][1] == 1  # every (run, step) exactly once
    assert {line.split()[0] for line in effects} == set(ids)
    _assert_history_sound(db_url, ids[:20])
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(timeout=30) == 0


def test_sigkill_of_a_worker_holding_runs_others_finish_them(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    ids = _start_many(db_url, "held", 5)
    a = _worker(dp_spawn)
    wait_until(
        lambda: sum(1 for e in side_effects(tmp_path, "effects") if e.endswith("h-start")) == 5,
        what="all runs to reach the held step",
    )
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    (tmp_path / "go").write_text("")
    _worker(dp_spawn)
    wait_until(
        lambda: _statuses(db_url).get("completed") == 5,
        timeout=60,
        what="the other worker to finish the runs",
    )
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    for rid in ids:
        assert (
            effects[f"{rid} a1"] == 1 and effects[f"{rid} a2"] == 1
        )  # completed before the kill: not re-run
        assert effects[f"{rid} h-start"] == 2  # in flight at the kill: ran again (at-least-once)
        assert effects[f"{rid} b1"] == 1 and effects[f"{rid} b2"] == 1
    _assert_history_sound(db_url, ids)


def test_sigstop_past_the_lease_then_sigcont_records_nothing(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    [rid] = _start_many(db_url, "held", 1)
    a = _worker(dp_spawn)
    wait_until(
        lambda: f"{rid} h-start" in side_effects(tmp_path, "effects"),
        what="worker A to hold the run",
    )
    stop_between_transactions(a, db_url)
    # Read after the stop: a loaded machine may have let A's lease lapse and A take it again.
    first_attempt = client_call(db_url, lambda c: c.get(rid)).attempt
    starts = side_effects(tmp_path, "effects").count(f"{rid} h-start")
    try:
        b = _worker(dp_spawn)
        wait_until(
            lambda: client_call(db_url, lambda c: c.get(rid)).attempt > first_attempt,
            timeout=30,
            what="worker B to take over",
        )
        wait_until(
            lambda: side_effects(tmp_path, "effects").count(f"{rid} h-start") > starts,
            what="B to reach the held step",
        )
        (tmp_path / "go").write_text("")
        wait_until(
            lambda: client_call(db_url, lambda c: c.get(rid)).status == "completed",
            timeout=30,
            what="B to complete",
        )
    finally:
        a.send_signal(signal.SIGCONT)
    # A wakes inside its step, finishes it, and must be refused at its next write.
    final = client_call(db_url, lambda c: c.get(rid)).attempt
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(a.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    wait_until(
        lambda: any("lease lost" in line for line in lines),
        timeout=20,
        what="A to notice it lost the lease",
    )
    evs = _events(db_url, rid)
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    takeover = next(i for i, e in enumerate(evs) if e.attempt == final)
    assert all(e.attempt == final for e in evs[takeover:]), [
        (e.seq, e.kind, e.attempt) for e in evs
    ]
    assert sum(1 for e in evs if e.kind == "run_completed") == 1
    effects = side_effects(tmp_path, "effects")
    assert effects.count(f"{rid} b1") == 1  # A never went on past the step it was in
    b.send_signal(signal.SIGTERM)


def test_thousand_runs_suspended_cost_the_worker_nothing(
    db_url: str, dp_spawn: Any, tmp_path: Path, dp_cli: Any
) -> None:
    ids = _start_many(db_url, "nap", 1000, seconds=9.0)
    w = _worker(dp_spawn, "--suspend-after", "0.5", "--concurrency", "200")

    def all_suspended() -> bool:
        s = _statuses(db_url)
        if s.get("sleeping") != 1000:
            return False
        held = json.loads(dp_cli("workers", "--json", check=True).stdout)
        return sum(x["runs_held"] for x in held) == 0

    wait_until(
        all_suspended, timeout=60, interval=0.2, what="all 1000 runs to be suspended and released"
    )
    wait_until(
        lambda: _statuses(db_url).get("completed") == 1000,
        timeout=120,
        interval=0.5,
        what="all runs to wake and complete",
    )
    assert len(side_effects(tmp_path, "effects")) == 1000
    _assert_history_sound(db_url, ids[:50])
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0


def test_sigterm_lets_the_step_finish_and_releases_the_lease(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    [rid] = _start_many(db_url, "held", 1)
    a = _worker(dp_spawn, "--grace", "20", env={"DURAPIPE_LEASE_TTL": "60"})
    wait_until(
        lambda: f"{rid} h-start" in side_effects(tmp_path, "effects"), what="A to hold the run"
    )
    a.send_signal(signal.SIGTERM)
    (tmp_path / "go").write_text("")  # the in-flight step can now finish within the grace period
    assert a.wait(timeout=30) == 0
    view = client_call(db_url, lambda c: c.get(rid))
    assert view.lease_owner is None and view.status == "pending"
    assert any(e.kind == "step_completed" and e.name == "hold" for e in _events(db_url, rid))
    # With a 60 s lease, a second worker only gets it this fast because A released it.
    _worker(dp_spawn, env={"DURAPIPE_LEASE_TTL": "60"})
    wait_until(
        lambda: client_call(db_url, lambda c: c.get(rid)).status == "completed",
        timeout=20,
        what="B to finish the run",
    )
    assert side_effects(tmp_path, "effects").count(f"{rid} h-start") == 1


def test_run_killed_under_durapipe_run_is_finished_by_a_worker(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{WORK}:held", env=FAST)
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: f"{rid} h-start" in side_effects(tmp_path, "effects"),
        what="the run to reach the held step",
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    _worker(dp_spawn)
    wait_until(
        lambda: client_call(db_url, lambda c: c.get(rid)).status == "completed",
        timeout=30,
        what="a worker to finish it",
    )


def test_start_twice_with_one_run_id_and_result_wait(
    db_url: str, dp_cli: Any, dp_spawn: Any
) -> None:
    a = dp_cli(
        "start", f"{WORK}:five", "--run-id", "nightly-1", "--input", "n=2", check=True
    ).stdout.strip()
    b = dp_cli(
        "start", f"{WORK}:five", "--run-id", "nightly-1", "--input", "n=2", check=True
    ).stdout.strip()
    assert a == b == "nightly-1"
    assert dp_cli("result", "nightly-1").returncode == 3  # not finished, no --wait
    _worker(dp_spawn)
    p = dp_cli("result", "nightly-1", "--wait", "--timeout", "60")
    assert p.returncode == 0 and p.stdout.strip() == "2"
    assert len(json.loads(dp_cli("list", "--json", check=True).stdout)) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["worker", "-m", "no_such_module_q"], "no module named"),
        (["worker", "-m", str(PIPELINES / "__init__.py")], "no such file"),
        (["worker", "-m", WORK, "--concurrency", "0"], "--concurrency 0"),
    ],
)
def test_worker_bad_input(dp_cli: Any, args: list[str], needle: str) -> None:
    p = dp_cli(*args)
    assert p.returncode != 0 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, (
        p.stderr
    )


def test_worker_module_without_pipelines(dp_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "empty_mod.py").write_text("X = 1\n")
    p = dp_cli("worker", "-m", "empty_mod.py")
    assert p.returncode == 1 and "has no pipelines" in p.stderr


def test_worker_refuses_two_pipelines_of_one_name(dp_cli: Any, tmp_path: Path) -> None:
    """One would silently replace the other, and its runs replay code that is not theirs."""
    for mod in ("team_a", "team_b"):
        (tmp_path / f"{mod}.py").write_text(
            f"import durapipe as dp\n\n@dp.pipeline(name='etl')\nasync def {mod}() -> str:\n"
            f"    return '{mod}'\n"
        )
    # A module that imports a pipeline of another it is given with carries the same one: fine.
    (tmp_path / "both.py").write_text("from team_a import team_a\n")
    p = dp_cli("worker", "-m", "team_a.py", "-m", "team_b.py")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "two pipelines are named 'etl' (in team_a.py and in team_b.py)" in p.stderr
    ok = dp_cli("upgrade", "check", "-m", "team_a.py", "-m", "both.py")
    assert ok.returncode == 0 and "two pipelines" not in ok.stderr, ok.stderr


def test_worker_on_an_unmigrated_postgres_says_how_to_migrate(
    pg_server: Any, tmp_path: Path
) -> None:
    import uuid

    from conftest import _with_db, cli_env

    from durapipe._store import create_database, drop_database

    if pg_server is None:
        pytest.skip("no PostgreSQL server available")
    name = "dp_bare_" + uuid.uuid4().hex[:8]
    asyncio.run(create_database(pg_server, name))
    try:
        url = _with_db(pg_server, name)
        p = subprocess.run(
            [sys.executable, "-m", "durapipe", "worker", "-m", WORK],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=cli_env(url),
        )
        assert p.returncode == 1 and "run `durapipe db upgrade` first" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    finally:
        asyncio.run(drop_database(pg_server, name))


def test_worker_log_file_gets_one_json_record_per_line(
    db_url: str, dp_cli: Any, dp_spawn: Any, tmp_path: Path
) -> None:
    log_file = tmp_path / "worker.jsonl"
    w = _worker(dp_spawn, "--log-file", str(log_file))
    rid = dp_cli("start", f"{WORK}:nap", "--input", "seconds=0.1", check=True).stdout.strip()
    assert dp_cli("result", rid, "--wait", "--timeout", "60").returncode == 0
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records and all(r["run_id"] == rid for r in records)
    assert any(r["line"].startswith("Sleeping for") for r in records)


SLOW_IMPORT = """
import os, pathlib, time
import durapipe as dp

side = pathlib.Path(os.environ["SIDE_DIR"])
(side / "importing").write_text("")
deadline = time.monotonic() + 30
while not (side / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.01)


@dp.pipeline
async def slow() -> None:
    pass
"""


def test_sigterm_while_the_worker_is_still_starting_is_a_graceful_stop(
    dp_spawn: Any, tmp_path: Path
) -> None:
    """A stop that arrives while the worker imports its modules is kept: it stops once it can, exit 0."""
    (tmp_path / "slow_mod.py").write_text(SLOW_IMPORT)
    w = dp_spawn("worker", "-m", str(tmp_path / "slow_mod.py"))
    wait_until(lambda: (tmp_path / "importing").exists(), what="the worker to import the module")
    w.send_signal(signal.SIGTERM)
    (tmp_path / "go").write_text("")
    out, err = w.communicate(timeout=30)
    assert w.returncode == 0, err[-3000:]
    assert "shutting down" in err and err.rstrip().endswith("stopped"), err
