"""Run timeouts, durable retries and the recovery limit, as a user meets them: real worker
processes, real SIGKILL, both databases. Instants are read from the recorded history."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import PIPELINES, client_call, side_effects, wait_until

P = str(PIPELINES / "retries.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _worker(dp_spawn: Any, **env: str) -> subprocess.Popen[str]:
    return dp_spawn("worker", "-m", P, env={**FAST, **env})


def _ready_worker(db_url: str, dp_spawn: Any, **env: str) -> subprocess.Popen[str]:
    """A worker, once it is up and claiming (tests whose deadlines count from the start)."""
    before = len(_live(db_url))
    w = _worker(dp_spawn, **env)
    wait_until(lambda: len(_live(db_url)) > before, timeout=60, what="the worker to start")
    return w


def _live(db_url: str) -> list[Any]:
    return client_call(db_url, lambda c: c.store.live_workers(now=time.time(), stale_after=30))


def _row(db_url: str, rid: str) -> Any:
    return client_call(db_url, lambda c: c.store.get_run(rid))


def _events(db_url: str, rid: str) -> list[Any]:
    return client_call(db_url, lambda c: c.store.events(rid))


def _data(ev: Any) -> dict[str, Any]:
    return json.loads(ev.data) if ev.data else {}


def _start(db_url: str, name: str, **kw: Any) -> str:
    from durapipe._definition import load_target

    pdef = load_target(f"{P}:{name}")
    return str(client_call(db_url, lambda c: c.start(pdef, **kw)))


def test_run_timeout_fires_while_suspended_with_no_worker_up(
    db_url: str, dp_cli: Any, dp_spawn: Any, tmp_path: Path
) -> None:
    w = _ready_worker(db_url, dp_spawn, DURAPIPE_SUSPEND_AFTER="0")
    rid = dp_cli("start", f"{P}:wait_forever", "--timeout", "5s", check=True).stdout.strip()
    wait_until(
        lambda: (r := _row(db_url, rid)).status == "waiting" and r.lease_owner is None,
        what="the run to suspend on its input",
    )
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    row = _row(db_url, rid)
    assert row.deadline_at is not None and row.wake_at == row.deadline_at  # the deadline wakes it
    wait_until(lambda: time.time() > row.deadline_at + 0.3, timeout=15, what="the deadline")
    assert _row(db_url, rid).status == "waiting"  # nobody is up to end it
    _worker(dp_spawn)
    wait_until(lambda: _row(db_url, rid).status == "timed_out", what="the run to time out")
    assert side_effects(tmp_path, "effects") == ["finally"]  # its finally block ran, once
    evs = _events(db_url, rid)
    assert evs[-1].kind == "run_timed_out" and evs[-1].at >= row.deadline_at
    assert [e.kind for e in evs].count("step_completed") == 1  # the finally's step
    assert rid in dp_cli("list", "--status", "timed_out", check=True).stdout
    show = dp_cli("show", rid, check=True).stdout
    assert "timed_out" in show and "RunTimeout" in show


def test_a_sync_step_that_times_out_is_retried_then_fails_with_step_timeout(
    db_url: str, dp_cli: Any, tmp_path: Path
) -> None:
    out = dp_cli("run", f"{P}:sync_timeout", "--no-timestamps", check=True)
    rid = out.stdout.splitlines()[0]
    assert out.stdout.splitlines()[-1] == "3"  # the third try returned its attempt number
    assert side_effects(tmp_path, "effects") == [f"slow_sync try {i}" for i in (1, 2, 3)]
    evs = _events(db_url, rid)
    retries = [_data(e) for e in evs if e.kind == "step_retry"]
    assert [r["try"] for r in retries] == [1, 2]
    assert {r["error"]["type"] for r in retries} == {"StepTimeout"}
    assert "attempt 1 failed: StepTimeout: step slow_sync_1 timed out after 0.5s" in out.stdout
    # Out of retries: the pipeline sees dp.StepTimeout (a StepFailed), recorded as such.
    out = dp_cli("run", f"{P}:sync_timeout_fails", check=True)
    assert out.stdout.splitlines()[-1] == '"StepTimeout 0.3"'
    rid = out.stdout.splitlines()[0]
    failed = [_data(e) for e in _events(db_url, rid) if e.kind == "step_failed"]
    assert failed[0]["timeout"] == 0.3 and failed[0]["tries"] == 2


def test_a_retry_delay_survives_a_sigkill_of_the_worker(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    a = _worker(dp_spawn)
    rid = _start(db_url, "retry_later")
    retry = wait_until(
        lambda: next((e for e in _events(db_url, rid) if e.kind == "step_retry"), None),
        what="the first try to fail",
    )
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    retry_at = _data(retry)["retry_at"]
    assert retry_at - retry.at >= 3.9  # 4s, no jitter; the lease (2s) lapses well before
    _worker(dp_spawn)
    wait_until(lambda: _row(db_url, rid).status == "completed", what="the run to complete")
    evs = _events(db_url, rid)
    later = [e for e in evs if e.seq > retry.seq and e.kind == "step_started"]
    assert len(later) == 1 and later[0].attempt > retry.attempt  # the second worker ran try 2
    assert later[0].at >= retry_at  # ... not before the recorded instant
    tries = side_effects(tmp_path, "effects")
    assert [t.split(" at ")[0] for t in tries] == ["flaky try 1", "flaky try 2"]
    assert float(tries[1].split(" at ")[1]) >= retry_at
    assert json.loads(_row(db_url, rid).output) == "ok on try 2"


def test_a_long_retry_delay_suspends_the_run_and_non_retryable_fails_at_once(
    db_url: str, dp_cli: Any, dp_spawn: Any, tmp_path: Path
) -> None:
    _worker(dp_spawn, DURAPIPE_SUSPEND_AFTER="0.5")
    rid = _start(db_url, "retry_suspends")
    row = wait_until(
        lambda: (r := _row(db_url, rid)).status == "sleeping" and r.lease_owner is None and r,
        what="the run to suspend during a retry delay",
    )
    assert "retry" in json.loads(row.waiting_for)
    retry = [e for e in _events(db_url, rid) if e.kind == "step_retry"][-1]
    assert row.wake_at == _data(retry)["retry_at"]  # woken at the recorded instant
    delay = _data(retry)["delay"]
    assert 0.75 <= delay <= 1.5  # jitter: between half and all of retry_delay (backoff 1)
    show = dp_cli("show", rid, check=True).stdout
    assert "Retrying until_file_1 (try " in show
    (tmp_path / "ready").touch()
    wait_until(lambda: _row(db_url, rid).status == "completed", what="the run to complete")
    (tmp_path / "bad").touch()
    rid2 = _start(db_url, "retry_suspends")
    wait_until(lambda: _row(db_url, rid2).status == "failed", what="the KeyError to fail it")
    kinds = [e.kind for e in _events(db_url, rid2)]
    assert "step_retry" not in kinds and kinds.count("step_failed") == 1


def test_a_step_that_kills_its_process_ends_dead_then_resume_after_the_fix(
    db_url: str, dp_cli: Any, dp_spawn: Any, tmp_path: Path
) -> None:
    rid = _start(db_url, "crasher")  # max_recoveries=1
    for _ in range(2):  # the first execution and its one recovery die
        w = _worker(dp_spawn)
        assert w.wait(timeout=60) == -signal.SIGKILL
    _worker(dp_spawn)  # the next claim finds the limit passed
    wait_until(lambda: _row(db_url, rid).status == "dead", what="the run to end dead")
    assert side_effects(tmp_path, "effects") == ["crash", "crash"]  # not a third time
    row = _row(db_url, rid)
    assert row.recoveries == 2 and row.finished_at is None
    dead = _events(db_url, rid)[-1]
    assert dead.kind == "run_dead"
    why = _data(dead)
    assert why["type"] == "RecoveryLimit" and "crash_unless_fixed" in why["message"]
    assert any("about to crash" in ln["line"] for ln in why["logs"])  # its last words
    assert rid in dp_cli("list", "--status", "dead", check=True).stdout
    assert "RecoveryLimit" in dp_cli("show", rid, check=True).stdout
    (tmp_path / "fixed").touch()
    out = dp_cli("resume", rid)
    assert out.returncode == 0, out.stderr
    row = _row(db_url, rid)
    assert row.status == "completed" and row.recoveries == 0
    assert side_effects(tmp_path, "effects") == ["crash", "crash", "fixed"]


def test_bad_timeout_on_the_command_line_changes_nothing(db_url: str, dp_cli: Any) -> None:
    # (the parser's cases are in tests/unit/test_retry_options.py; here: the commands use it)
    for cmd, bad in (("start", "2x"), ("run", "-5s")):
        out = dp_cli(cmd, f"{P}:wait_forever", "--timeout", bad)
        assert out.returncode != 0
        assert out.stderr.startswith("error: --timeout") and out.stderr.count("\n") == 1
    assert client_call(db_url, lambda c: c.list()) == []


def test_a_parent_timeout_ends_its_child_timed_out_too(
    db_url: str, dp_cli: Any, dp_spawn: Any, tmp_path: Path
) -> None:
    _ready_worker(db_url, dp_spawn)
    rid = _start(db_url, "parent_times_out")  # timeout=4 on the pipeline; suspend_after 60 s
    kid = wait_until(
        lambda: next(iter(client_call(db_url, lambda c: c.store.children(rid))), None),
        what="the child",
    )
    wait_until(lambda: _row(db_url, kid.id).status == "waiting", what="the child to wait")
    # A wait the run's timeout ends sooner than suspend_after is kept in memory, not suspended
    # only to be taken again at the deadline (a suspension racing the timeout once ran a
    # finally block twice).
    for run in (_row(db_url, rid), _row(db_url, kid.id)):
        assert run.status == "waiting" and run.lease_owner is not None and run.attempt == 1, run
    wait_until(lambda: _row(db_url, rid).status == "timed_out", what="the parent to time out")
    assert _row(db_url, rid).attempt == 1  # timed out by the worker that held it
    kids = client_call(db_url, lambda c: c.store.children(rid))
    assert len(kids) == 1 and kids[0].deadline_at == _row(db_url, rid).deadline_at
    wait_until(lambda: _row(db_url, kids[0].id).status == "timed_out", what="the child")
    assert sorted(side_effects(tmp_path, "effects")) == ["child finally", "parent finally"]
    out = dp_cli("resume", rid)
    assert out.returncode == 1 and out.stderr.startswith(f"error: run {rid} timed out;")


def test_dp_exec_retries_a_failing_command(db_url: str, dp_cli: Any) -> None:
    out = dp_cli("run", f"{P}:exec_retries", "--no-timestamps", check=True)
    rid = out.stdout.splitlines()[0]
    assert out.stdout.splitlines()[-1] == '"ok"'
    kinds = [e.kind for e in _events(db_url, rid) if e.name == "exec"]
    assert kinds == ["step_started", "step_retry", "step_started", "step_completed"]
    retry = next(_data(e) for e in _events(db_url, rid) if e.kind == "step_retry")
    assert retry["result"]["exit_code"] == 3 and retry["error"]["type"] == "ExecFailed"


def test_run_timeout_under_durapipe_run_cancels_the_run_here(
    db_url: str, dp_cli: Any, tmp_path: Path
) -> None:
    out = dp_cli("run", f"{P}:wait_forever", "--timeout", "2s", "--no-timestamps")
    assert out.returncode == 1
    rid = out.stdout.splitlines()[0]
    assert _row(db_url, rid).status == "timed_out"
    assert side_effects(tmp_path, "effects") == ["finally"]
    assert f"run {rid} timed_out: RunTimeout: the run passed its timeout" in out.stderr
    assert "cannot be resumed; start a new run" in out.stderr
