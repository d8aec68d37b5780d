"""Hardening #14: secrets never reach the database, a log file or the terminal in any form (raw,
JSON-escaped, cut in two); command output cannot drive the operator's terminal; non-finite
floats are refused. Real CLI subprocesses, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES

H14 = str(PIPELINES / "h14_secrets.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]

# A PEM-like key with a quote, a backslash and newlines: JSON and repr escape all three.
PEM = '-----BEGIN TEST KEY-----\nq"uote\\back-Zk81Lm\nMIIEvQ-second-7f3a\n-----END TEST KEY-----'
# A one-line secret cut in two by the 256 KiB split of a line and by the 64 KiB tail.
SPLIT = 'tok"en\\first-9c1e|second-half-55ab'


def forms(secret: str) -> list[str]:
    """Every way the secret could leak: raw, escaped (JSON, repr), and each half of it."""
    half = len(secret) // 2
    out = []
    for s in (secret, secret[:half], secret[half:]):
        out += [s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], repr(s)[1:-1]]
    return out


def assert_clean(text: str, secret: str, where: str) -> None:
    for f in forms(secret):
        assert f not in text, f"{where} holds {f!r}"


def database_text(db_url: str, tmp_path: Path) -> str:
    """Everything the database holds: the SQLite files' bytes (-wal and -shm included), or every
    column of every row of the PostgreSQL tables."""
    if db_url.startswith("sqlite"):
        files = sorted(tmp_path.glob("durapipe.db*"))
        assert files
        return b"".join(f.read_bytes() for f in files).decode("utf-8", "replace")
    import asyncpg

    async def dump() -> str:
        conn = await asyncpg.connect(db_url)
        try:
            parts = []
            for table in ("durapipe_runs", "durapipe_events", "durapipe_logs", "durapipe_inputs"):
                for row in await conn.fetch(f"SELECT * FROM {table}"):
                    parts += [str(v) for v in row.values() if v is not None]
            return "\n".join(parts)
        finally:
            await conn.close()

    return asyncio.run(dump())


def test_a_secret_with_quotes_backslashes_and_newlines_is_masked_everywhere(
    db_url: str, dp_cli: Cli, tmp_path: Path
) -> None:
    env = {"DP_PEM": PEM}
    done = dp_cli("run", f"{H14}:escaped", env=env)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout.splitlines()[-1])
    assert output["key"] == "***" and output["got"]["raw"] == "***"
    assert "***" in output["as_json"] and "***" in output["got"]["as_json"]
    # Children fail on a command's stderr and a step's exception; the parent quotes it with !r.
    failed = dp_cli("run", f"{H14}:escaped_tree", env=env)
    assert failed.returncode == 1
    rid = failed.stdout.splitlines()[0]
    failure = failed.stderr[failed.stderr.index(f"run {rid} failed: RuntimeError: cannot use") :]
    assert failure.startswith(f"run {rid} failed: RuntimeError: cannot use '***'"), failure
    doc = dp_cli("show", rid, "--json", check=True).stdout
    children = [
        e["data"]["error"] for e in json.loads(doc)["events"] if e["kind"] == "child_failed"
    ]
    assert len(children) == 2 and all("***" in c["message"] for c in children), children
    seen = {
        "run (completed)": done.stdout + done.stderr,
        "run (failed)": failed.stdout + failed.stderr,
        "show --json": doc,
        "logs": dp_cli("logs", rid, check=True).stdout,
    }
    for where, text in seen.items():
        assert_clean(text, PEM, where)
    assert_clean(database_text(db_url, tmp_path), PEM, "the database")


def test_a_secret_cut_by_the_line_split_or_the_kept_tail_is_masked(
    db_url: str, dp_cli: Cli, tmp_path: Path
) -> None:
    p = dp_cli("run", f"{H14}:long_output", env={"DP_SPLIT": SPLIT})
    assert p.returncode == 0, p.stderr
    rid = p.stdout.splitlines()[0]
    assert_clean(p.stdout + p.stderr, SPLIT, "run")
    records = [json.loads(x) for x in dp_cli("logs", rid, "--json", check=True).stdout.splitlines()]
    out = [r["line"] for r in records if r["stream"] == "out"]
    assert sum(line.count("***") for line in out) == 2, [line[-60:] for line in out]
    doc = dp_cli("show", rid, "--json", check=True).stdout
    assert_clean(doc, SPLIT, "show --json")
    kept = next(
        e["data"]["result"]["stdout"]
        for e in json.loads(doc)["events"]
        if e["kind"] == "step_completed"
    )
    assert kept.endswith("z\n") and len(kept) <= 64 * 1024  # the tail, cut where the secret was
    assert_clean(database_text(db_url, tmp_path), SPLIT, "the database")


def test_worker_log_file_is_private_and_masked(
    db_url: str, dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    log_file = tmp_path / "worker.jsonl"
    w = dp_spawn("worker", "-m", H14, "--log-file", str(log_file), env={"DP_PEM": PEM})
    rid = dp_cli("start", f"{H14}:escaped", check=True).stdout.strip()
    assert dp_cli("result", rid, "--wait", "--timeout", "60").returncode == 0
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    text = log_file.read_text()
    assert "***" in text
    assert_clean(text, PEM, "the log file")
    assert_clean(database_text(db_url, tmp_path), PEM, "the database")


def test_control_characters_are_shown_not_sent_to_the_terminal(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{H14}:control_chars", "-i", "fail=true", "--no-timestamps")
    assert p.returncode == 1
    rid = p.stdout.splitlines()[0]
    shown = dp_cli("logs", rid, "--no-timestamps", check=True).stdout
    for text in (p.stdout, shown):
        line = next(x for x in text.splitlines() if "title\\x1b" in x)
        assert line.endswith(
            "title\\x1b]0;pwned\\x07 clear\\x1b[2J\tTAB del\\x7f csi\\x9b31m end"
        ), line
        assert "err\\x1b[31mred" in text
    result = dp_cli("result", rid)
    for text in (p.stderr, result.stderr):  # the failure line quotes the command's stderr
        assert "boom\\x1b[2J\\x1b]0;pwned\\x07" in text, text
    for text in (p.stdout, p.stderr, shown, result.stderr):
        for raw in ("\x1b", "\x07", "\x7f", "\x9b"):
            assert raw not in text
    stored = [json.loads(x)["line"] for x in dp_cli("logs", rid, "--json").stdout.splitlines()]
    assert "title\x1b]0;pwned\x07 clear\x1b[2J\tTAB del\x7f csi\x9b31m end" in stored  # raw


def test_non_finite_floats_are_refused_naming_the_step(dp_cli: Cli) -> None:
    # NaN is not JSON: inside --input-json it is an error and nothing starts...
    p = dp_cli("run", f"{H14}:echo_input", "--input-json", '{"x": [1, Infinity]}')
    assert p.returncode != 0
    assert p.stderr.startswith(
        "error: input 'x' of pipeline 'echo_input' contains a float that is not finite"
    ), p.stderr
    assert json.loads(dp_cli("list", "--json", check=True).stdout) == []
    # ... on the command line it is the string "NaN".
    p = dp_cli("run", f"{H14}:echo_input", "-i", "x=NaN")
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == '"NaN"', p.stdout
    p = dp_cli("run", f"{H14}:nan_result")
    assert p.returncode == 1
    assert "the result of step nan_step_1 (float) contains a float that is not finite" in p.stderr
    p = dp_cli("run", f"{H14}:inf_output")
    assert p.returncode == 1
    assert (
        "the output of pipeline inf_output (dict) contains a float that is not finite" in p.stderr
    )
