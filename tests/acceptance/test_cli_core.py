"""The CLI as a user runs it: real subprocesses, real SIGKILL, both databases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, ROOT, epoch, side_effects, wait_until

COUNTING = str(PIPELINES / "counting.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def test_hello_example_runs_and_prints_id_first_and_output_last(
    dp_cli: Cli, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    p = dp_cli("run", "examples/hello.py:hello", "--input", "name=tester", "--input", "nap=0.1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("run_") and len(lines[0]) == 24
    assert json.loads(lines[-1])["greeting"] == "Hello, tester!"
    assert any("[hello.exec_2" in line and "Hello, tester!" in line for line in lines)
    doc = _show(dp_cli, lines[0])
    assert doc["status"] == "completed" and doc["inputs"] == {"name": "tester", "nap": 0.1}
    assert {
        "run_id",
        "pipeline",
        "version",
        "status",
        "inputs",
        "output",
        "error",
        "parent_run_id",
        "created_at",
        "updated_at",
        "events",
    } <= set(doc)
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))
    listed = json.loads(dp_cli("list", "--json", check=True).stdout)
    assert [r["run_id"] for r in listed] == [lines[0]]


def test_sigkill_after_step_k_then_resume_does_not_rerun_steps(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    proc = dp_spawn("run", f"{COUNTING}:counting", "--input", "n=6", "--input", "block_at=3")
    wait_until(lambda: "block-3" in side_effects(tmp_path, "steps"), what="step 3 to complete")
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert side_effects(tmp_path, "steps") == ["1", "2", "3", "block-3"]
    (tmp_path / "go").write_text("")
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"total": 210}
    # 1..3 ran once; the step in flight at the kill ran again (at-least-once); 4..6 once.
    assert side_effects(tmp_path, "steps") == ["1", "2", "3", "block-3", "block-3", "4", "5", "6"]
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "completed"
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))
    assert any(e["kind"] == "run_resumed" for e in doc["events"])


def test_failed_step_then_resume_retries_it(dp_cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "fail").write_text("")
    p = dp_cli("run", f"{COUNTING}:failing")
    assert p.returncode == 1
    run_id = p.stdout.splitlines()[0]
    assert "the flag file says fail" in p.stderr and "durapipe resume" in p.stderr
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "failed" and doc["error"]["step"] == "2"
    (tmp_path / "fail").unlink()
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "42"
    assert side_effects(tmp_path, "steps") == ["1", "3"]
    assert side_effects(tmp_path, "flaky") == ["2", "2"]


def test_sleep_interrupted_by_a_kill_waits_only_the_remainder(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    proc = dp_spawn("run", f"{COUNTING}:sleeper", "--input", "seconds=5")
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    # Wait for the console's "Sleeping for 5s" before polling `show` (each look is a process
    # start, slow on a loaded machine), then kill as soon as the timer is recorded.
    for line in proc.stdout:  # type: ignore[union-attr]
        if "Sleeping for" in line:
            break

    def timer() -> dict[str, Any] | None:
        evs = _show(dp_cli, run_id)["events"]
        return next((e for e in evs if e["kind"] == "timer_started"), None)

    started = wait_until(timer, what="the timer to be recorded")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    evs = _show(dp_cli, run_id)["events"]
    assert not any(e["kind"] == "timer_fired" for e in evs), "killed too late to prove anything"
    wake_at = started["data"]["wake_at"]
    wait_until(
        lambda: time.time() > wake_at + 0.1, timeout=10, what="the original wake time to pass"
    )
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    evs = _show(dp_cli, run_id)["events"]
    resumed = next(e for e in evs if e["kind"] == "run_resumed")
    fired = next(e for e in evs if e["kind"] == "timer_fired")
    assert sum(1 for e in evs if e["kind"] == "timer_started") == 1
    # Due already: the resumed run does not sleep another 3 s.
    assert epoch(fired["at"]) - epoch(resumed["at"]) < 3.0
    assert side_effects(tmp_path, "steps") == ["1", "2"]


def test_nondeterministic_code_blocks_then_restored_code_resumes(
    dp_cli: Cli, tmp_path: Path
) -> None:
    src = tmp_path / "flow.py"
    good = (
        "import durapipe as dp\n"
        "@dp.step\n"
        "def a() -> int:\n    return 1\n"
        "@dp.step\n"
        "def b() -> int:\n    return 2\n"
        "@dp.step\n"
        "def boom() -> int:\n    import os\n    if os.path.exists('fail'):\n        raise RuntimeError('boom')\n    return 3\n"
        "@dp.pipeline(version='1')\n"
        "async def flow() -> int:\n    return await a() + await b() + await boom()\n"
    )
    src.write_text(good)
    (tmp_path / "fail").write_text("")
    p = dp_cli("run", "flow.py:flow")
    run_id = p.stdout.splitlines()[0]
    assert p.returncode == 1
    src.write_text(good.replace("await a() + await b()", "await b() + await a()"))
    p = dp_cli("resume", run_id)
    assert p.returncode == 1
    assert "blocked" in p.stderr and "nondeterministic at step 1" in p.stderr
    assert _show(dp_cli, run_id)["status"] == "blocked"
    src.write_text(good)
    (tmp_path / "fail").unlink()
    p = dp_cli("resume", run_id)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "6"


def test_ctrl_c_leaves_the_run_stopped_and_resumable(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    proc = dp_spawn("run", f"{COUNTING}:long_exec")
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: any(
            e["kind"] == "step_started" and e["name"] == "exec"
            for e in _show(dp_cli, run_id)["events"]
        ),
        what="the exec to start",
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "stopped"
    assert not any(e["kind"] == "step_completed" and e["name"] == "exec" for e in doc["events"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nowhere.py:x"], "no such file"),
        (["run", "no_such_module_xyz:x"], "no module named"),
        (["run", f"{COUNTING}:nope"], "has no pipeline 'nope'"),
        (["run", f"{COUNTING}:counting", "--input", "n"], "not NAME=VALUE"),
        (["run", f"{COUNTING}:counting", "--input", "zz=1"], "has no input 'zz'"),
        (["run", f"{COUNTING}:counting", "--input-json", "{bad"], "not valid JSON"),
        (["resume", "run_00000000000000000000"], "no run with id"),
        (["show", "run_00000000000000000000"], "no run with id"),
        (["run", f"{COUNTING}:counting", "--run-id", "bad id!"], "not usable"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(
    dp_cli: Cli, args: list[str], needle: str
) -> None:
    p = dp_cli(*args)
    assert p.returncode != 0
    assert needle in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert json.loads(dp_cli("list", "--json", check=True).stdout) == []


def test_resume_of_a_completed_run_says_so(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{COUNTING}:counting", "--input", "n=1")
    run_id = p.stdout.splitlines()[0]
    p = dp_cli("resume", run_id)
    assert (
        p.returncode == 1
        and "has completed" in p.stderr
        and len(p.stderr.strip().splitlines()) == 1
    )


def test_run_with_the_id_of_an_ended_run_reports_it_and_runs_nothing(
    dp_cli: Cli, tmp_path: Path
) -> None:
    first = dp_cli("run", f"{COUNTING}:counting", "--input", "n=2", "--run-id", "nightly-1")
    assert first.returncode == 0, first.stderr
    again = dp_cli("run", f"{COUNTING}:counting", "--input", "n=2", "--run-id", "nightly-1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "nightly-1"  # the id first, the output last
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert "exists already" in again.stderr
    assert side_effects(tmp_path, "steps") == ["1", "2"]  # not run twice


def test_commands_on_a_run_id_create_no_database(tmp_path: Path) -> None:
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DURAPIPE_DATABASE_URL"}
    for args in (
        ["show", "run_nope"],
        ["resume", "run_nope"],
        ["stop", "run_nope"],
        ["cancel", "run_nope"],
        ["input", "run_nope", "approve", "true"],
        ["logs", "run_nope"],
        ["result", "run_nope"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "durapipe", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.startswith("error: no run with id 'run_nope'"), (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    assert list(tmp_path.iterdir()) == []  # the default ./durapipe.db was not created


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    import sys

    env = dict(os.environ, DURAPIPE_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    p = subprocess.run(
        [sys.executable, "-m", "durapipe", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert p.returncode == 1
    assert (
        p.stderr.startswith("error: cannot reach the database")
        and len(p.stderr.strip().splitlines()) == 1
    )
