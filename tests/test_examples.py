"""The examples, run as a user runs them: the command from each docstring, through the real CLI.

reminder sleeps for days, so it runs in-process with the testing kit's skipping clock instead.
Every test runs on SQLite and on PostgreSQL (the db_url fixture).
"""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_until

EXAMPLES = ROOT / "examples"
Cli = Callable[..., subprocess.CompletedProcess[str]]


def documented_command(name: str) -> list[str]:
    """The `durapipe run examples/NAME.py:...` line of an example's docstring, as argv."""
    doc = ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text())) or ""
    lines = [line.strip() for line in doc.splitlines() if line.strip().startswith("durapipe run ")]
    assert lines, f"examples/{name}.py: its docstring gives no `durapipe run` command"
    argv = shlex.split(lines[0])
    assert argv[2].startswith(f"examples/{name}.py:"), argv
    return argv[1:]


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of examples/ in the working directory, so the documented commands work as written."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _runs(dp_cli: Cli) -> list[dict[str, Any]]:
    return json.loads(dp_cli("list", "--json", "--limit", "1000", check=True).stdout)


def _output(p: subprocess.CompletedProcess[str]) -> Any:
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_every_example_documents_its_command() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        documented_command(path.stem)


def test_hello(dp_cli: Cli, examples: Path) -> None:
    out = _output(dp_cli(*documented_command("hello")))
    assert out["greeting"] == "Hello, world!"


def test_flaky_retries_then_succeeds(dp_cli: Cli, examples: Path) -> None:
    p = dp_cli(*documented_command("flaky"))
    assert _output(p) == "report fetched on try 3"
    assert p.stdout.count("failed: ConnectionError") == 2
    doc = _show(dp_cli, p.stdout.splitlines()[0])
    retries = [e for e in doc["events"] if e["kind"] == "step_retry"]
    assert [e["data"]["try"] for e in retries] == [1, 2]


def test_flaky_out_of_retries_fails_resumably(dp_cli: Cli, examples: Path) -> None:
    p = dp_cli("run", "examples/flaky.py:flaky", "--input", "fail_times=9")
    assert p.returncode == 1
    run_id = p.stdout.splitlines()[0]
    assert f"durapipe resume {run_id}" in p.stderr
    doc = _show(dp_cli, run_id)
    assert doc["status"] == "failed" and doc["error"]["step"] == "2"


def test_fan_out_keeps_to_its_limit(dp_cli: Cli, examples: Path) -> None:
    argv = documented_command("fan_out")
    assert argv[-4:] == ["--input", "shards=6", "--input", "limit=2"]
    p = dp_cli(*argv)
    assert _output(p) == {"shards": 6, "rows": 55, "per_shard": [0, 1, 4, 9, 16, 25]}
    parent = p.stdout.splitlines()[0]
    children = [r for r in _runs(dp_cli) if r["parent_run_id"] == parent]
    assert len(children) == 6 and all(c["status"] == "completed" for c in children)
    # A branch holds its slot from starting its child until recording its end: at most 2 overlap.
    for c in children:
        overlapping = [o for o in children if o["created_at"] <= c["created_at"] < o["finished_at"]]
        assert len(overlapping) <= 2


def test_deploy_waits_for_approval_given_with_durapipe_input(
    dp_cli: Cli, dp_spawn: Any, examples: Path
) -> None:
    proc = dp_spawn(*documented_command("deploy"))
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(lambda: _show(dp_cli, run_id)["status"] == "waiting", what="the approval wait")
    assert _show(dp_cli, run_id)["waiting_for"]["input"] == "approve"
    dp_cli("input", run_id, "approve", "true", check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["deployed"] is True and result["artifact"] == "app-1.4.2.tar.gz"
    assert "[deploy.build_1.exec_1" in out  # the child's lines nest under the parent
    doc = _show(dp_cli, run_id)
    assert doc["pinned"] is True and doc["version"] == "1"
    [child] = [r for r in _runs(dp_cli) if r["parent_run_id"] == run_id]
    assert child["pipeline"] == "build" and child["status"] == "completed"


def test_deploy_not_approved(dp_cli: Cli, dp_spawn: Any, examples: Path) -> None:
    proc = dp_spawn("run", "examples/deploy.py:deploy")
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    dp_cli("input", run_id, "approve", "false", check=True)  # sent before it asks: kept
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "deployed": False,
        "artifact": "app-1.0.0.tar.gz",
    }


@pytest.mark.asyncio
async def test_reminder_sleeps_for_days_in_no_time(store: Any, tmp_path: Path) -> None:
    from durapipe._definition import load_target
    from durapipe.testing import SkippingClock, run_pipeline

    assert "days=3" in " ".join(documented_command("reminder"))
    reminder = load_target(f"{EXAMPLES / 'reminder.py'}:reminder")
    t0 = time.monotonic()
    view = await run_pipeline(
        store, reminder, clock=SkippingClock(), days=3, message="renew the TLS certificate"
    )
    assert time.monotonic() - t0 < 2.0  # about 20 ms on an idle machine; no real waiting
    assert view.status == "completed" and view.output == "renew the TLS certificate"
    events = await store.events(view.run_id)
    timer = next(e for e in events if e.kind == "timer_started")
    assert json.loads(timer.data)["seconds"] == 3 * 86400
    echoed = [json.loads(e.data)["result"]["stdout"] for e in events if e.kind == "step_completed"]
    assert echoed == ["Reminder: renew the TLS certificate\n"]


def test_order_paid_by_a_message_publishes_its_status(
    dp_cli: Cli, dp_spawn: Any, examples: Path
) -> None:
    proc = dp_spawn(*documented_command("order"))
    run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    status = dp_cli("events", run_id, "--wait", "status", "--timeout", "30", check=True)
    assert status.stdout.strip() == "awaiting_payment"
    dp_cli("send", run_id, "paid", '{"receipt": "r-991"}', check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "paid" and "r-991" in result["books"]
    shipped = json.loads(dp_cli("events", run_id, "--json", check=True).stdout)
    assert shipped == {"status": "paid", "shipped": {"order": "A-17", "amount": 42.5}}


def test_manifest_repaired_by_edit_then_fork(dp_cli: Cli, examples: Path) -> None:
    p = dp_cli(*documented_command("manifest"))
    assert p.returncode == 1 and "0 replicas would serve nothing" in p.stderr
    rid = p.stdout.splitlines()[0]
    doc = ast.get_docstring(ast.parse((EXAMPLES / "manifest.py").read_text())) or ""
    edit, fork = (
        shlex.split(line.strip().replace("RUN_ID", rid))[1:]
        for line in doc.splitlines()
        if line.strip().startswith(("durapipe edit ", "durapipe fork "))
    )
    assert dp_cli(*edit).returncode == 0
    assert _output(dp_cli("resume", rid)) == "app:1.4.2 x3"
    p = dp_cli(*fork)
    assert _output(p) == "app:1.4.2 x3" and p.stdout.splitlines()[0] != rid


def test_poller_continues_as_new_and_run_follows_the_chain(dp_cli: Cli, examples: Path) -> None:
    p = dp_cli(*documented_command("poller"), timeout=90)
    assert _output(p) == {"checks": 6, "failures": 6}
    assert p.stdout.count("Continued as new run") == 2
    live = _runs(dp_cli)
    assert len(live) == 1 and live[0]["status"] == "completed"  # list shows the live link
    ended = json.loads(dp_cli("list", "--status", "continued", "--json", check=True).stdout)
    assert len(ended) == 2
    assert all(len(_show(dp_cli, r["run_id"])["events"]) < 20 for r in ended + live)


def test_bank_moves_money_exactly_once(dp_cli: Cli, examples: Path) -> None:
    out = _output(dp_cli(*documented_command("bank")))
    assert out == {"alice": "62.50", "bob": "137.50"}
    doc = _show(dp_cli, dp_cli(*documented_command("bank")).stdout.splitlines()[0])
    assert doc["output"] == {"alice": "25.00", "bob": "175.00"}  # the same tables, a second run
    assert [e["kind"] for e in doc["events"]].count("transaction_committed") == 4


def test_nightly_runs_by_hand_and_declares_its_schedule(dp_cli: Cli, examples: Path) -> None:
    out = _output(dp_cli(*documented_command("nightly")))
    assert out["kept"] == 3 and len(out["day"]) == 10
    import durapipe as dp
    from durapipe._definition import load_target

    pdef = load_target(str(examples / "examples" / "nightly.py") + ":nightly")
    assert pdef.schedule == dp.Cron(
        "0 3 * * *", tz="Europe/Berlin", overlap="skip", catch_up="last"
    )


def test_rate_limited_fan_out_keeps_to_five_calls_a_second(dp_cli: Cli, examples: Path) -> None:
    p = dp_cli(*documented_command("rate_limited"))
    out = _output(p)
    assert out["items"] == 12
    # 12 calls at 5 per second: the third batch cannot go out before two windows have passed.
    assert out["seconds"] >= 1.8, out
    kids = [r for r in _runs(dp_cli) if r["pipeline"] == "call_api"]
    assert len(kids) == 12 and {r["queue"] for r in kids} == {"api"}
