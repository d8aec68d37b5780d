"""People in the loop and runs under control: inputs, stop, resume, cancel — real processes."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, cli_env, side_effects, wait_until

COUNTING = str(PIPELINES / "counting.py")
WORK = str(PIPELINES / "work.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _status(dp_cli: Cli, run_id: str) -> str:
    return str(_show(dp_cli, run_id)["status"])


def _kinds(dp_cli: Cli, run_id: str) -> list[str]:
    return [e["kind"] for e in _show(dp_cli, run_id)["events"]]


def _exec_kinds(dp_cli: Cli, run_id: str) -> list[str]:
    """The events of the run's dp.exec calls (a @dp.step records a step_started too)."""
    return [e["kind"] for e in _show(dp_cli, run_id)["events"] if e["name"] == "exec"]


def _first_line(p: subprocess.Popen[str]) -> str:
    return p.stdout.readline().strip()  # type: ignore[union-attr]


def test_input_sent_during_the_wait(dp_cli: Cli, dp_spawn: Any) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval")
    rid = _first_line(p)
    wait_until(lambda: _status(dp_cli, rid) == "waiting", what="the run to wait")
    shown = dp_cli("show", rid, check=True).stdout
    assert f"durapipe input {rid} approve VALUE" in shown  # show says how to answer
    dp_cli("input", rid, "approve", "true", check=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"approve": True}
    assert any(
        "Waiting for input 'approve'" in line and f"durapipe input {rid} approve" in line
        for line in out.splitlines()
    )


def test_input_sent_before_the_pipeline_asks_is_kept_and_taken_in_order(
    dp_cli: Cli, db_url: str
) -> None:
    import asyncio

    import durapipe as dp
    from durapipe._definition import load_target

    pdef = load_target(f"{COUNTING}:two_answers")

    async def queue() -> str:
        async with await dp.Client.connect(db_url) as c:
            rid = await c.start(pdef)
            return rid

    rid = asyncio.run(queue())
    dp_cli("input", rid, "n", "1", check=True)
    dp_cli("input", rid, "n", '"two"', check=True)
    p = dp_cli("resume", rid)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [1, "two"]


def test_input_after_the_run_ended_is_refused(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{COUNTING}:counting", "--input", "n=1")
    rid = p.stdout.splitlines()[0]
    p = dp_cli("input", rid, "approve", "true")
    assert (
        p.returncode == 1
        and "has ended (completed)" in p.stderr
        and len(p.stderr.strip().splitlines()) == 1
    )


@pytest.mark.parametrize("use_default", [True, False])
def test_input_timeout_with_and_without_default(dp_cli: Cli, use_default: bool) -> None:
    p = dp_cli(
        "run",
        f"{COUNTING}:approval",
        "--input",
        "timeout=0.3",
        "--input",
        f"use_default={json.dumps(use_default)}",
    )
    rid = p.stdout.splitlines()[0]
    if use_default:
        assert p.returncode == 0
        assert json.loads(p.stdout.strip().splitlines()[-1]) == {"approve": "no answer"}
    else:
        assert p.returncode == 1 and "InputTimeout" in p.stderr
        assert _status(dp_cli, rid) == "failed"
    assert "input_timeout" in _kinds(dp_cli, rid)


def test_input_survives_a_kill_and_is_not_asked_twice(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval_then_block")
    rid = _first_line(p)
    wait_until(lambda: _status(dp_cli, rid) == "waiting", what="the run to wait")
    dp_cli("input", rid, "approve", '"yes"', check=True)
    wait_until(
        lambda: "block-9" in side_effects(tmp_path, "steps"), what="the run to go past the input"
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"approve": "yes"}
    assert "Waiting for input" not in r.stdout  # not asked again
    assert _kinds(dp_cli, rid).count("input_requested") == 1


def test_input_is_answered_at_the_terminal(db_url: str, tmp_path: Path) -> None:
    main, sub = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "durapipe", "run", f"{COUNTING}:approval"],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        cwd=tmp_path,
        env=cli_env(db_url, SIDE_DIR=str(tmp_path)),
        close_fds=True,
    )
    os.close(sub)
    seen = b""

    def read_until(needle: bytes) -> bool:
        nonlocal seen
        import select

        r, _, _ = select.select([main], [], [], 0.2)
        if r:
            try:
                seen += os.read(main, 65536)
            except OSError:
                pass
        return needle in seen

    try:
        wait_until(lambda: read_until(b"answer for 'approve'"), timeout=30, what="the prompt")
        os.write(main, b"42\n")
        wait_until(lambda: read_until(b'{"approve": 42}'), timeout=30, what="the output")
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(main)


def test_stop_during_exec_waits_for_it_then_resume_does_not_repeat(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{COUNTING}:exec_then_step")
    rid = _first_line(p)
    wait_until(lambda: "step_started" in _exec_kinds(dp_cli, rid), what="the exec to start")
    r = dp_cli("stop", rid, check=True)
    assert "stop requested" in r.stdout
    assert _status(dp_cli, rid) == "running"  # a plain stop lets the command finish
    (tmp_path / "go").write_text("")
    p.communicate(timeout=30)
    assert p.returncode == 1
    assert _status(dp_cli, rid) == "stopped"
    assert _exec_kinds(dp_cli, rid) == ["step_started", "step_completed"]  # it ran to its end
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    assert "$ sh -c" not in r.stdout  # the exec was not run again
    assert side_effects(tmp_path, "steps") == ["1", "2"]


def test_stop_now_kills_the_exec_which_runs_again_on_resume(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{COUNTING}:exec_then_step")
    rid = _first_line(p)
    wait_until(lambda: "step_started" in _exec_kinds(dp_cli, rid), what="the exec to start")
    dp_cli("stop", rid, "--now", check=True)
    p.communicate(timeout=30)  # ends without the go file: the command was killed
    assert _status(dp_cli, rid) == "stopped"
    assert _exec_kinds(dp_cli, rid) == ["step_started"]
    shown = dp_cli("show", rid, check=True).stdout
    assert "exec_1  interrupted" in shown  # not "running": nothing runs it now
    r = dp_cli("resume", rid, "--detach", check=True)
    assert "handed to the workers" in r.stdout
    assert _status(dp_cli, rid) == "pending"


def test_stop_then_resume_completes_with_nothing_repeated(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval")
    rid = _first_line(p)
    wait_until(lambda: _status(dp_cli, rid) == "waiting", what="the run to wait")
    dp_cli("stop", rid, check=True)
    p.communicate(timeout=30)
    assert _status(dp_cli, rid) == "stopped"
    dp_cli("input", rid, "approve", "false", check=True)
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"approve": False}
    assert side_effects(tmp_path, "steps") == ["1", "2"]


@pytest.mark.parametrize("wait", ["input", "exec", "sleep"])
def test_cancel_runs_the_finally_which_records_a_step(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, wait: str
) -> None:
    p = dp_spawn("run", f"{COUNTING}:guarded", "--input", f"wait={wait}")
    rid = _first_line(p)
    want = {"input": "input_requested", "exec": "step_started", "sleep": "timer_started"}[wait]
    look = _exec_kinds if wait == "exec" else _kinds
    wait_until(lambda: want in look(dp_cli, rid), what="the run to be waiting")
    r = dp_cli("cancel", rid, check=True)
    assert "cancel requested" in r.stdout
    p.communicate(timeout=30)
    assert _status(dp_cli, rid) == "cancelled"
    assert side_effects(tmp_path, "steps") == ["1", "cleanup"]
    kinds = _kinds(dp_cli, rid)
    assert kinds[-1] == "run_cancelled" and kinds.count("step_completed") == 2


@pytest.mark.parametrize("via", ["cli", "client"])
def test_cancel_of_a_suspended_run_runs_its_finally_at_once(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, db_url: str, via: str
) -> None:
    w = dp_spawn("worker", "-m", COUNTING, "--suspend-after", "0.2")
    r = dp_cli("start", f"{COUNTING}:guarded", "--input", "wait=input", check=True)
    rid = r.stdout.strip()
    wait_until(
        lambda: _show(dp_cli, rid)["status"] == "waiting" and _show(dp_cli, rid).get("waiting_for"),
        what="the run to suspend",
    )
    w.send_signal(signal.SIGTERM)
    w.wait(timeout=30)
    if via == "cli":
        r = dp_cli("cancel", rid)
        assert r.returncode == 0, r.stderr
    else:
        assert _client(db_url, tmp_path, f"await c.cancel({rid!r})") == "cancelled"
    assert _status(dp_cli, rid) == "cancelled"
    assert side_effects(tmp_path, "steps") == ["1", "cleanup"]


def _client(db_url: str, tmp_path: Path, expr: str) -> Any:
    """Evaluate ``expr`` with ``c`` a dp.Client, in a process of its own; its value as JSON."""
    code = (
        "import asyncio, json, durapipe as dp\n"
        "async def main():\n"
        f"    async with await dp.Client.connect({db_url!r}) as c:\n"
        f"        print(json.dumps({expr}))\n"
        "asyncio.run(main())\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env=cli_env(db_url, SIDE_DIR=str(tmp_path)),
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_cancel_of_a_failed_run_and_a_stop_after_a_queued_cancel(
    dp_cli: Cli, tmp_path: Path, db_url: str
) -> None:
    (tmp_path / "flow.py").write_text(
        "import durapipe as dp\n"
        "@dp.step\ndef boom() -> None:\n    raise RuntimeError('boom')\n"
        "@dp.pipeline(name='boomer', version='1')\nasync def boomer() -> None:\n    await boom()\n"
    )
    p = dp_cli("run", "flow.py:boomer")
    assert p.returncode == 1
    rid = p.stdout.splitlines()[0]
    assert _status(dp_cli, rid) == "failed"
    assert _client(db_url, tmp_path, f"await c.cancel({rid!r})") == "cancelled"
    assert _status(dp_cli, rid) == "cancelled"
    assert dp_cli("resume", rid).returncode == 1  # cancelled is final
    # A cancel queued for a worker is not undone by a stop.
    queued = dp_cli("start", "flow.py:boomer", check=True).stdout.strip()
    assert _client(db_url, tmp_path, f"await c.cancel({queued!r}, here=False)") == "queued"
    r = dp_cli("stop", queued)
    assert r.returncode == 1 and "being cancelled" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["input", "run_00000000000000000000", "x", "1"], "no run with id"),
        (["stop", "run_00000000000000000000"], "no run with id"),
        (["cancel", "run_00000000000000000000"], "no run with id"),
    ],
)
def test_steering_unknown_runs(dp_cli: Cli, args: list[str], needle: str) -> None:
    p = dp_cli(*args)
    assert p.returncode == 1 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_steering_finished_and_cancelled_runs_changes_nothing(dp_cli: Cli, tmp_path: Path) -> None:
    rid = dp_cli("run", f"{COUNTING}:counting", "--input", "n=1").stdout.splitlines()[0]
    before = _show(dp_cli, rid)
    for args, needle in (
        (["stop", rid], "already ended"),
        (["cancel", rid], "already ended"),
        (["input", rid, "a", "1"], "has ended"),
    ):
        p = dp_cli(*args)
        assert p.returncode == 1 and needle in p.stderr, p.stderr
    assert _show(dp_cli, rid) == before


def test_value_over_the_size_limit_is_refused(dp_cli: Cli, dp_spawn: Any) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval")
    rid = _first_line(p)
    wait_until(lambda: _status(dp_cli, rid) == "waiting", what="the run to wait")
    r = dp_cli("input", rid, "approve", "-", stdin="x" * 1_000_100)
    assert (
        r.returncode == 1
        and "the limit is 1,000,000 bytes" in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
    dp_cli("cancel", rid, check=True)
    p.communicate(timeout=30)
    r = dp_cli("resume", rid)
    assert r.returncode == 1 and "was cancelled" in r.stderr


def test_show_lists_every_input_a_run_waits_for(dp_cli: Cli, dp_spawn: Any) -> None:
    p = dp_spawn("run", f"{COUNTING}:two_at_once")
    rid = _first_line(p)
    wait_until(
        lambda: _kinds(dp_cli, rid).count("input_requested") == 2, what="both inputs asked for"
    )
    shown = dp_cli("show", rid, check=True).stdout
    assert f"durapipe input {rid} a VALUE" in shown and f"durapipe input {rid} b VALUE" in shown
    dp_cli("input", rid, "b", "2", check=True)
    wait_until(lambda: "input_received" in _kinds(dp_cli, rid), what="b to be taken")
    assert _status(dp_cli, rid) == "waiting"  # still waiting, for a
    shown = dp_cli("show", rid, check=True).stdout
    assert f"durapipe input {rid} a VALUE" in shown and f"{rid} b VALUE" not in shown
    dp_cli("input", rid, "a", "1", check=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == [1, 2]


def test_value_just_under_the_size_limit_is_taken(dp_cli: Cli, dp_spawn: Any) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval")
    rid = _first_line(p)
    wait_until(lambda: _status(dp_cli, rid) == "waiting", what="the run to wait")
    # 999,985 bytes encoded: within the limit, and over it once wrapped in the event (it was)
    value = json.dumps("y" * 999_983)
    dp_cli("input", rid, "approve", "-", stdin=value, check=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"approve": "y" * 999_983}
