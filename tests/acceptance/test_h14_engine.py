"""Hardening #14, engine: resume of a handled failure, interrupted @dp.step attempts, errors whose
message cannot be rendered. The CLI as a user runs it (real subprocesses, real SIGKILL), on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, side_effects, wait_until

H14 = str(PIPELINES / "h14_engine.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _history(dp_cli: Cli, run_id: str) -> list[tuple[Any, ...]]:
    return [(e["seq"], e["kind"], e["step"], e["attempt"]) for e in _show(dp_cli, run_id)["events"]]


# ---------------------------------------------------------------- 8a: resume of a handled failure


def test_resume_refuses_a_failure_the_pipeline_handled_and_changes_nothing(
    dp_cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "bank_down").write_text("")
    p = dp_cli("run", f"{H14}:transfer", "--input", "amount=10")
    assert p.returncode == 1
    run_id = p.stdout.splitlines()[0]
    assert side_effects(tmp_path, "ledger") == ["withdraw 10", "refund 10"]
    # The run's own report does not send the user to a resume that would refuse.
    assert "handled the failure of step deposit_1" in p.stderr, p.stderr
    assert "retries the failed step" not in p.stderr
    before = _show(dp_cli, run_id)
    assert before["status"] == "failed" and before["error"]["step"] == "2"

    (tmp_path / "bank_down").unlink()  # the cause is fixed
    p = dp_cli("resume", run_id)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "deposit_1 failed" in lines[0] and "handled that failure" in lines[0]
    assert "refund_1 is recorded after it" in lines[0]
    assert "the run stays failed" in lines[0] and "Start a new run" in lines[0]
    # Nothing ran and nothing was written: no deposit, the same history, still failed.
    assert side_effects(tmp_path, "ledger") == ["withdraw 10", "refund 10"]
    after = _show(dp_cli, run_id)
    assert after["events"] == before["events"]
    assert after["status"] == "failed" and after["attempt"] == before["attempt"]

    # Handing it to the workers is refused the same way.
    p = dp_cli("resume", run_id, "--detach")
    assert p.returncode != 0 and "handled that failure" in p.stderr
    assert _show(dp_cli, run_id)["status"] == "failed"


def test_resume_retries_a_failure_that_is_the_last_thing_recorded(
    dp_cli: Cli, tmp_path: Path
) -> None:
    # The pipeline catches the failure but makes no call after it: resume retries the deposit.
    (tmp_path / "bank_down").write_text("")
    p = dp_cli("run", f"{H14}:transfer", "--input", "amount=7", "--input", "compensate=false")
    assert p.returncode == 1
    run_id = p.stdout.splitlines()[0]
    assert "retries the failed step" in p.stderr
    assert side_effects(tmp_path, "ledger") == ["withdraw 7"]
    (tmp_path / "bank_down").unlink()
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == "moved"
    assert side_effects(tmp_path, "ledger") == ["withdraw 7", "deposit 7"]
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "completed"
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))


# ---------------------------------------------------------------- 7: an interrupted @dp.step


def test_a_step_killed_mid_way_shows_both_attempts(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    proc = dp_spawn("run", f"{H14}:slow_step")
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(lambda: "w-start" in side_effects(tmp_path, "steps"), what="the step to start")

    def started() -> bool:
        return any(
            e["kind"] == "step_started" and e["step"] == "2"
            for e in _show(dp_cli, run_id)["events"]
        )

    wait_until(started, timeout=15, what="the step's start to be recorded")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert side_effects(tmp_path, "steps") == ["w-start"]

    (tmp_path / "go").write_text("")
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    assert "running again: an earlier attempt did not finish" in p.stdout
    assert side_effects(tmp_path, "steps") == ["w-start", "w-start", "w-end"]
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "completed"
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))
    at_step = [(e["kind"], e["attempt"]) for e in doc["events"] if e["step"] == "2"]
    assert at_step == [("step_started", 1), ("step_started", 2), ("step_completed", 2)]
    # The other steps ran once: one start, one completion each.
    for key in ("1", "3"):
        assert [e["kind"] for e in doc["events"] if e["step"] == key] == [
            "step_started",
            "step_completed",
        ]
    shown = dp_cli("show", run_id, check=True).stdout
    line = next(x for x in shown.splitlines() if "wait_for_go_1" in x)
    assert "done" in line and "ran 2× (1 re-run after resume)" in line, shown
    assert "attempt" not in next(x for x in shown.splitlines() if "withdraw_1" in x)


# ---------------------------------------------------------------- 11: an unprintable exception


def test_unprintable_exception_fails_the_run_readably_under_run(
    dp_cli: Cli, tmp_path: Path
) -> None:
    p = dp_cli("run", f"{H14}:raises_unprintable", timeout=60)
    assert p.returncode == 1, p.stderr
    run_id = p.stdout.splitlines()[0]
    assert "Unprintable: its message could not be rendered (ValueError: no str for you)" in (
        p.stderr
    )
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "Unprintable"
    assert (
        doc["error"]["message"] == "its message could not be rendered (ValueError: no str for you)"
    )
    assert doc["events"][-1]["kind"] == "run_failed"

    # A step raising it: the step fails with that error (not with the error of its __str__).
    p = dp_cli("run", f"{H14}:raises_unprintable", "--input", "in_step=true", timeout=60)
    assert p.returncode == 1, p.stderr
    doc = _show(dp_cli, p.stdout.splitlines()[0])
    assert doc["status"] == "failed" and doc["error"]["type"] == "StepFailed"
    assert "Unprintable: its message could not be rendered" in doc["error"]["message"]
    failed = [e for e in doc["events"] if e["kind"] == "step_failed"]
    assert len(failed) == 1 and failed[0]["data"]["error"]["type"] == "Unprintable"


def test_unprintable_exception_fails_the_run_under_a_worker(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    ids = [
        dp_cli("start", f"{H14}:raises_unprintable", *extra, check=True).stdout.strip()
        for extra in ([], ["--input", "in_step=true"])
    ]
    dp_spawn("worker", "-m", H14, env=FAST)

    def ended() -> list[dict[str, Any]] | None:
        docs = [_show(dp_cli, rid) for rid in ids]
        return docs if all(d["status"] not in ("pending", "running") for d in docs) else None

    docs = wait_until(ended, timeout=30, what="the worker to end both runs")
    assert [d["status"] for d in docs] == ["failed", "failed"]
    assert docs[0]["error"]["type"] == "Unprintable"
    assert "could not be rendered" in docs[0]["error"]["message"]
    assert docs[1]["error"]["type"] == "StepFailed"
    assert "could not be rendered" in docs[1]["error"]["message"]
    # Ended once: not claimed again and again.
    for d in docs:
        assert [e["kind"] for e in d["events"]].count("run_failed") == 1
        assert d["attempt"] == 1
