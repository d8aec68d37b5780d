"""What people read: the line format, colours, stored logs, secrets."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, wait_until

CONSOLE = str(PIPELINES / "console.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \[(?P<prefix>[^\]]+?) *\](?P<mark>[ !])(?P<text>.*)$"
)


def test_live_output_matches_the_line_format(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{CONSOLE}:chatty")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()[1:-1]  # between the run id and the output
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    by_text = {m["text"]: m for m in parsed if m}
    assert by_text["out-line"]["prefix"] == "chatty.exec_1" and by_text["out-line"]["mark"] == " "
    assert by_text["err-line"]["mark"] == "!"  # stderr is marked
    assert by_text["$ sh -c 'echo out-line; echo err-line >&2'"]["prefix"] == "chatty.exec_1"
    assert any(t.startswith("exit 0 in ") for t in by_text)
    assert by_text["note: inside a step"]["prefix"] == "chatty.note_1"  # logging gets the step
    assert by_text["from the pipeline body"]["prefix"] == "chatty"
    assert "\x1b[" not in p.stdout  # not a terminal: no colour
    bare = dp_cli("run", f"{CONSOLE}:chatty", "--no-timestamps").stdout.splitlines()[1]
    assert bare.startswith("[chatty.exec_1")


def test_no_color_is_honoured_and_force_color_colours(dp_cli: Cli) -> None:
    coloured = dp_cli("run", f"{CONSOLE}:chatty", env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert "\x1b[" in coloured.stdout
    plain = dp_cli("run", f"{CONSOLE}:chatty", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in plain.stdout


def test_logs_show_the_whole_tree_aligned_and_as_json(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{CONSOLE}:tree")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.splitlines()[0]
    lines = dp_cli("logs", rid, check=True).stdout.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert len({line.index("]") for line in lines}) == 1  # one column for the whole tree
    texts = [LINE.match(line)["text"] for line in lines]  # type: ignore[index]
    assert "alpha" in texts and "root-line" in texts
    assert any(LINE.match(line)["prefix"] == "tree.child_echo_1.exec_1" for line in lines)  # type: ignore[index]
    records = [json.loads(x) for x in dp_cli("logs", rid, "--json", check=True).stdout.splitlines()]
    assert {"at", "time", "run_id", "root_run_id", "step", "prefix", "stream", "line"} <= set(
        records[0]
    )
    assert len({r["run_id"] for r in records}) == 2


def test_logs_of_a_killed_and_resumed_run_are_complete_and_not_doubled(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{CONSOLE}:killed_midway")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: "second-start" in dp_cli("logs", rid).stdout, what="the second command to start"
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    assert dp_cli("resume", rid).returncode == 0
    texts = [
        json.loads(x)["line"] for x in dp_cli("logs", rid, "--json", check=True).stdout.splitlines()
    ]
    assert texts.count("first") == 1  # replay printed nothing again
    assert texts.count("third") == 1 and texts.count("second-end") == 1
    assert texts.count("second-start") == 2  # the command ran twice, and the log says so
    assert any("again: the last attempt did not finish" in t for t in texts)
    assert texts.index("first") < texts.index("second-start") < texts.index("third")


def test_logs_follow_ends_when_the_run_ends(dp_cli: Cli, dp_spawn: Any, tmp_path: Path) -> None:
    p = dp_spawn("run", f"{CONSOLE}:killed_midway")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    follower = dp_spawn("logs", rid, "-f", "--no-timestamps")
    wait_until(lambda: "second-start" in dp_cli("logs", rid).stdout, what="the second command")
    (tmp_path / "go").write_text("")
    out, _ = follower.communicate(timeout=30)  # returns by itself once the run completes
    assert follower.returncode == 0
    assert "] third" in out and out.count("] first\n") == 1


def test_a_secret_never_reaches_the_database(db_url: str, dp_cli: Cli, tmp_path: Path) -> None:
    token = "tok-7f3a9c1e55"
    p = dp_cli("run", f"{CONSOLE}:with_secret", env={"DP_TEST_TOKEN": token})
    assert p.returncode == 0, p.stderr
    assert token not in p.stdout and token not in p.stderr
    assert "env=*** arg=***" in p.stdout
    rid = p.stdout.splitlines()[0]
    everything = (
        dp_cli("show", rid, "--json", check=True).stdout
        + dp_cli("logs", rid, "--json", check=True).stdout
    )
    assert token not in everything and "***" in everything
    if db_url.startswith("sqlite"):
        raw = b"".join(f.read_bytes() for f in tmp_path.glob("durapipe.db*"))
        assert token.encode() not in raw
    else:
        import asyncio

        import asyncpg

        async def dump() -> str:
            conn = await asyncpg.connect(db_url)
            try:
                parts = []
                for table in (
                    "durapipe_runs",
                    "durapipe_events",
                    "durapipe_logs",
                    "durapipe_inputs",
                ):
                    parts += [str(tuple(r)) for r in await conn.fetch(f"SELECT * FROM {table}")]
                return "\n".join(parts)
            finally:
                await conn.close()

        assert token not in asyncio.run(dump())


def test_list_and_show_render_for_people(dp_cli: Cli) -> None:
    rid = dp_cli("run", f"{CONSOLE}:tree").stdout.splitlines()[0]
    table = dp_cli("list", check=True).stdout
    assert "RUN" in table and "STATUS" in table and "completed: 2" in table
    assert dp_cli("list", "--roots", "--json", check=True).stdout.count('"run_id"') == 1
    shown = dp_cli("show", rid, check=True).stdout
    assert "child_echo_1" in shown and "exec_1" in shown and "output:" in shown
    bad = dp_cli("list", "--status", "bogus")
    assert bad.returncode == 1 and "unknown status" in bad.stderr
