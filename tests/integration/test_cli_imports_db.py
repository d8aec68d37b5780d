"""show, list, result and input import neither the engine nor what runs pipelines (issue #21:
a CLI that answers at once), on both databases. Not a timing test; see bench/cli_startup.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from cli_imports import NEVER, imported, modules_of
from conftest import PIPELINES, cli_env

Cli = Callable[..., subprocess.CompletedProcess[str]]
COUNTING = str(PIPELINES / "counting.py")


def test_commands_that_answer_at_once_import_no_engine(
    dp_cli: Cli, db_url: str, tmp_path: Path
) -> None:
    done = dp_cli("run", f"{COUNTING}:counting", "--input", "n=2", check=True)
    run_id = done.stdout.splitlines()[0]
    pending = dp_cli("start", f"{COUNTING}:counting", check=True).stdout.strip().splitlines()[-1]
    env = cli_env(db_url, SIDE_DIR=str(tmp_path))
    checks: list[tuple[list[str], int]] = [
        (["show", run_id], 0),
        (["show", run_id, "--json"], 0),
        (["list"], 0),
        (["list", "--json", "--tag", "env=prod"], 0),
        (["result", run_id], 0),
        (["result", pending], 3),  # not ended: says so
        (["input", pending, "approve", "true"], 0),
    ]
    for args, code in checks:
        mods, proc = modules_of(args, tmp_path, env)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert imported(mods, NEVER) == [], args
        if db_url.startswith("sqlite"):  # PostgreSQL's async engine comes with the ORM
            assert imported(mods, ["sqlalchemy.orm", "asyncpg"]) == [], args
    out = json.loads(dp_cli("result", run_id, check=True).stdout)
    assert out == json.loads(modules_of(["result", run_id], tmp_path, env)[1].stdout)
