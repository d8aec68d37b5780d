"""Console and CLI as a new user meets them (#14): the prompt on a terminal, Ctrl-C, durations,
stale errors, what "ran 2×" counts. Real subprocesses, a real pseudo-terminal, both databases."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, cli_env, epoch, wait_until

COUNTING = str(PIPELINES / "counting.py")
H14 = str(PIPELINES / "h14_console.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]
PROMPT = "answer for 'answer' (JSON or text) > "


def screen(data: str) -> list[str]:
    """What a terminal shows after ``data``: a small model of one (CR, LF, erase-line, text)."""
    lines, col, i = [""], 0, 0
    while i < len(data):
        m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])", data[i:])
        if m:
            if m[2] == "K":  # erase in line: 2 the whole line, 0 (default) to its end
                lines[-1] = "" if m[1] == "2" else lines[-1][:col]
            i += len(m[0])
            continue
        c = data[i]
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append("")
            col = 0
        elif c.isprintable():
            cur = lines[-1].ljust(col)
            lines[-1] = cur[:col] + c + cur[col + 1 :]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def test_terminal_model() -> None:
    assert screen("abc\r\x1b[2Kxy") == ["xy"]
    assert screen("one\r\ntwo\rT") == ["one", "Two"]
    assert screen("\x1b[2m… x\x1b[0m\r\x1b[2Kq > ") == ["q >"]


def test_prompt_stays_on_screen_after_a_long_command(db_url: str, tmp_path: Path) -> None:
    main, sub = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "durapipe", "run", f"{H14}:slow_then_ask"],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        cwd=tmp_path,
        env=cli_env(db_url, SIDE_DIR=str(tmp_path)),
        close_fds=True,
    )
    os.close(sub)
    seen = b""

    def read(for_: float = 0.2) -> None:
        nonlocal seen
        r, _, _ = select.select([main], [], [], for_)
        if r:
            try:
                seen += os.read(main, 65536)
            except OSError:
                pass

    def has(needle: str) -> bool:
        read()
        return needle.encode() in seen

    try:
        wait_until(lambda: has(PROMPT), timeout=60, what="the prompt")
        # The status line did show the command (so it was there to fight the prompt) ...
        assert b"running for" in seen
        # ... and over two status ticks (one a second) nothing takes the prompt away.
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            read(0.1)
        shown = screen(seen.decode())
        assert shown[-1] == PROMPT.rstrip(), shown[-4:]
        os.write(main, b"yes\n")
        wait_until(lambda: has('{"answer": "yes"}'), timeout=30, what="the output")
        assert p.wait(timeout=30) == 0
        read()
        shown = screen(seen.decode())
        assert PROMPT + "yes" in shown  # question and answer stay in the scrollback
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        os.close(main)


def _seconds(text: str) -> float:
    """1.45s, 312ms, 1m05s -> seconds."""
    m = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?|([\d.]+)ms", text)
    assert m, text
    if m[3]:
        return float(m[3]) / 1000
    return int(m[1] or 0) * 60 + float(m[2] or 0)


def _listed_duration(dp_cli: Cli, rid: str) -> str:
    for line in dp_cli("list", check=True).stdout.splitlines():
        if line.startswith(rid):
            return line.split()[-1]
    raise AssertionError(f"{rid} not listed")


def _show(dp_cli: Cli, rid: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", rid, "--json", check=True).stdout)


def test_ctrl_c_says_once_how_to_resume_logs_the_killed_command_and_durations_skip_the_stop(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{COUNTING}:exec_then_step")
    rid = p.stdout.readline().strip()
    wait_until(
        lambda: any(e["kind"] == "step_started" for e in _show(dp_cli, rid)["events"]),
        what="the command to start",
    )
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert (out + err).count(f"durapipe resume {rid}") == 1, (out, err)  # one hint
    killed = [
        line
        for line in dp_cli("logs", rid, check=True).stdout.splitlines()
        if "[exec_then_step.exec_1]" in line and "killed (SIGTERM) after" in line
    ]
    assert len(killed) == 1, dp_cli("logs", rid).stdout  # stored, so `logs` has it too
    assert killed[0] in out  # and it was shown live

    # Stopped: its working time stays put, and show says since when it is stopped.
    before = _listed_duration(dp_cli, rid)
    time.sleep(3)  # a stretch of stopped time the durations must leave out
    assert _listed_duration(dp_cli, rid) == before
    assert "stopped since" in dp_cli("show", rid, check=True).stdout

    (tmp_path / "go").write_text("")
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    doc = _show(dp_cli, rid)
    wall = epoch(doc["finished_at"]) - epoch(doc["created_at"])  # includes the 3 s stopped
    assert _seconds(_listed_duration(dp_cli, rid)) <= wall - 2.5
    shown = dp_cli("show", rid, check=True).stdout
    line = next(x for x in shown.splitlines() if "exec_1" in x)
    m = re.search(r"done  ([\d.]+)s  ran 2× \(1 re-run after resume\)", line)
    assert m, line
    assert float(m[1]) < 2.0  # the last run of the command, not from its first start
    assert "attempt" not in shown


def test_a_waiting_runs_duration_does_not_grow_and_show_says_it_waited(
    dp_cli: Cli, dp_spawn: Any
) -> None:
    p = dp_spawn("run", f"{COUNTING}:approval")
    rid = p.stdout.readline().strip()
    wait_until(lambda: _show(dp_cli, rid)["status"] == "waiting", what="the run to wait")
    before = _listed_duration(dp_cli, rid)
    time.sleep(1.5)  # waiting time passes
    assert _listed_duration(dp_cli, rid) == before
    head = dp_cli("show", rid, check=True).stdout.splitlines()[0]
    assert re.search(r"\(waited [\d.]+s\)", head), head
    dp_cli("input", rid, "approve", "true", check=True)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    doc = _show(dp_cli, rid)
    working = _seconds(_listed_duration(dp_cli, rid))
    assert (
        working <= epoch(doc["finished_at"]) - epoch(doc["created_at"]) - 1.0
    )  # the wait is not work


def test_a_failed_run_that_completes_after_resume_keeps_no_error(
    dp_cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "fail").write_text("")
    p = dp_cli("run", f"{COUNTING}:failing")
    assert p.returncode == 1
    rid = p.stdout.splitlines()[0]
    assert _show(dp_cli, rid)["error"]["type"] == "StepFailed"
    (tmp_path / "fail").unlink()
    assert dp_cli("resume", rid).returncode == 0
    assert _show(dp_cli, rid)["error"] is None  # stored as NULL, not just hidden
    shown = dp_cli("show", rid, check=True).stdout
    assert "error:" not in shown and "the flag file says fail" not in shown, shown
    flaky = next(x for x in shown.splitlines() if "flaky_1" in x)
    assert "ran 2× (1 re-run after resume)" in flaky, flaky
