"""Versions, pinning and safe upgrades, driven through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import side_effects, wait_until

Cli = Callable[..., subprocess.CompletedProcess[str]]

FLOW = """
import os
from pathlib import Path
import durapipe as dp

def mark(line):
    with open(Path(os.environ["SIDE_DIR"]) / "effects", "a") as f:
        f.write(line + "\\n")

@dp.step
def a() -> str:
    mark("a " + os.environ.get("WORKER_TAG", "-"))
    return "a"

@dp.step
def b() -> str:
    mark("b " + os.environ.get("WORKER_TAG", "-"))
    return "b"

@dp.step
def gate() -> str:
    if (Path(os.environ["SIDE_DIR"]) / "fail").exists():
        raise RuntimeError("gate closed")
    return "open"

@dp.pipeline(name="flow", version="{version}"{pin})
async def flow() -> list:
    out = [{calls}]
    await dp.exec("sh", "-c", 'echo ran >> "$SIDE_DIR/execs"')
    return out
"""


def write_flow(
    path: Path, version: str, calls: str = "await a(), await gate(), await b()", pin: bool = False
) -> None:
    path.write_text(
        FLOW.replace("{version}", version)
        .replace("{calls}", calls)
        .replace("{pin}", ", pin=True" if pin else "")
    )


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _failed_run(dp_cli: Cli, tmp_path: Path, *extra: str) -> str:
    """A run of flow.py stopped (failed) at its gate, so it has history to continue from."""
    (tmp_path / "fail").write_text("")
    p = dp_cli("run", "flow.py:flow", *extra)
    assert p.returncode == 1, p.stderr
    (tmp_path / "fail").unlink()
    return p.stdout.splitlines()[0]


def test_pinned_run_aborts_on_a_new_version_and_keeps_its_history(
    dp_cli: Cli, tmp_path: Path
) -> None:
    write_flow(tmp_path / "flow.py", "1")
    rid = _failed_run(dp_cli, tmp_path, "--pin")
    before = _show(dp_cli, rid)["events"]
    write_flow(tmp_path / "flow.py", "2")
    p = dp_cli("resume", rid)
    assert p.returncode == 1
    assert "aborted" in p.stderr and "'1'" in p.stderr and "'2'" in p.stderr
    doc = _show(dp_cli, rid)
    assert doc["status"] == "aborted"
    assert doc["events"][: len(before)] == before  # history intact
    assert (
        "aborted: pinned run of flow started on version '1'"
        in dp_cli("show", rid, check=True).stdout
    )
    assert dp_cli("resume", rid).returncode == 1  # aborted is final


def test_unpinned_run_continues_on_compatible_new_code(dp_cli: Cli, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1")
    rid = _failed_run(dp_cli, tmp_path)
    write_flow(tmp_path / "flow.py", "2", calls="await a(), await gate(), await b(), await b()")
    p = dp_cli("resume", rid)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == ["a", "open", "b", "b"]
    assert _show(dp_cli, rid)["version"] == "1"  # the version that started it stays recorded


def test_unpinned_incompatible_blocks_then_restored_completes(dp_cli: Cli, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1")
    rid = _failed_run(dp_cli, tmp_path)
    write_flow(tmp_path / "flow.py", "2", calls="await b(), await gate(), await a()")
    p = dp_cli("resume", rid)
    assert p.returncode == 1 and _show(dp_cli, rid)["status"] == "blocked"
    write_flow(tmp_path / "flow.py", "1")
    p = dp_cli("resume", rid)
    assert p.returncode == 0, p.stderr


def test_upgrade_check_reports_each_run_and_runs_nothing(dp_cli: Cli, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1")
    ok = _failed_run(dp_cli, tmp_path)
    pinned = _failed_run(dp_cli, tmp_path, "--pin")
    write_flow(
        tmp_path / "flow.py", "1", calls="await a(), await b(), await gate()"
    )  # same version word
    short = _failed_run(dp_cli, tmp_path)
    write_flow(tmp_path / "flow.py", "2", calls="await a(), await gate(), await b()")
    effects_before = side_effects(tmp_path, "effects")
    p = dp_cli("upgrade", "check", "-m", "flow.py", "--json")
    assert p.returncode == 1  # something would break
    verdicts = {v["run_id"]: v for v in json.loads(p.stdout)}
    assert verdicts[ok]["verdict"] == "compatible"
    assert verdicts[pinned]["verdict"] == "would_abort" and "'1'" in verdicts[pinned]["detail"]
    assert verdicts[short]["verdict"] == "nondeterministic"
    assert (
        "step 2" in verdicts[short]["detail"]
        and "'b'" in verdicts[short]["detail"]
        and "'gate'" in verdicts[short]["detail"]
    )
    assert not (tmp_path / "execs").exists()  # no exec ran
    assert side_effects(tmp_path, "effects") == effects_before  # no step body ran
    human = dp_cli("upgrade", "check", "-m", "flow.py")
    assert "would break" in human.stderr and ok in human.stdout


def test_old_and_new_workers_side_by_side_take_only_their_runs(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    write_flow(tmp_path / "v1" / "flow.py", "1", calls="await a()", pin=True)
    write_flow(tmp_path / "v2" / "flow.py", "2", calls="await a()", pin=True)
    old = [dp_cli("start", "v1/flow.py:flow", check=True).stdout.strip() for _ in range(2)]
    new = [dp_cli("start", "v2/flow.py:flow", check=True).stdout.strip() for _ in range(2)]
    dp_spawn("worker", "-m", "v1/flow.py", env={"WORKER_TAG": "old"})
    dp_spawn("worker", "-m", "v2/flow.py", env={"WORKER_TAG": "new"})

    def all_done() -> bool:  # one `list` per look, not a `show` per run
        runs = json.loads(dp_cli("list", "--json", "--limit", "100", check=True).stdout)
        return {r["run_id"] for r in runs if r["status"] == "completed"} >= set(old + new)

    wait_until(all_done, timeout=60, what="all runs")
    assert sorted(side_effects(tmp_path, "effects")) == ["a new"] * 2 + ["a old"] * 2
    workers = json.loads(dp_cli("workers", "--json", check=True).stdout)
    assert sorted(w["pipelines"]["flow"] for w in workers) == ["1", "2"]


def test_hold_and_release_a_pipeline(dp_cli: Cli, dp_spawn: Any, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1", calls="await a()")
    shutil.copy(tmp_path / "flow.py", tmp_path / "other.py")
    (tmp_path / "other.py").write_text(
        (tmp_path / "other.py").read_text().replace('name="flow"', 'name="other"')
    )
    dp_spawn("worker", "-m", "flow.py", "-m", "other.py")
    r = dp_cli("stop", "--pipeline", "flow", check=True)
    assert "durapipe resume --pipeline flow" in r.stdout
    held = dp_cli("start", "flow.py:flow", check=True).stdout.strip()
    probe = dp_cli("start", "other.py:other", check=True).stdout.strip()
    wait_until(
        lambda: _show(dp_cli, probe)["status"] == "completed", what="the worker to be taking work"
    )
    assert _show(dp_cli, held)["status"] == "pending"  # queued, not taken
    assert "held by `durapipe stop --pipeline flow`" in _show(dp_cli, held)["note"]
    dp_cli("resume", "--pipeline", "flow", check=True)
    wait_until(
        lambda: _show(dp_cli, held)["status"] == "completed", what="the released run to complete"
    )
    assert dp_cli("resume", "--pipeline", "flow").returncode == 1  # not held any more


def test_hold_and_release_one_version(dp_cli: Cli, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1", calls="await a()")
    dp_cli("stop", "--pipeline", "flow", "--version", "1", check=True)
    p = dp_cli("run", "flow.py:flow")
    assert p.returncode == 1 and "is held" in p.stderr
    held = p.stdout.splitlines()[0]
    write_flow(tmp_path / "flow.py", "2", calls="await a()")
    assert dp_cli("run", "flow.py:flow").returncode == 0  # version 2 is not held
    r = dp_cli("resume", "--pipeline", "flow", "--version", "2")
    assert r.returncode == 1 and "--version 1" in r.stderr  # says which hold there is
    dp_cli("resume", "--pipeline", "flow", "--version", "1", check=True)
    assert _show(dp_cli, held)["note"] is None or "held" not in _show(dp_cli, held)["note"]
    r = dp_cli("list", "--pipeline", "flow")
    assert "completed: 1" in r.stdout and "pending: 1" in r.stdout


def test_run_and_resume_in_the_foreground_respect_a_hold(dp_cli: Cli, tmp_path: Path) -> None:
    write_flow(tmp_path / "flow.py", "1", calls="await a()")
    dp_cli("stop", "--pipeline", "flow", check=True)
    p = dp_cli("run", "flow.py:flow")
    assert p.returncode == 1, p.stderr
    rid = p.stdout.splitlines()[0]
    assert "is held" in p.stderr and "durapipe resume --pipeline flow" in p.stderr
    assert _show(dp_cli, rid)["status"] == "pending"
    assert side_effects(tmp_path, "effects") == []  # queued: nothing ran
    r = dp_cli("resume", rid)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is held" in r.stderr
    assert _show(dp_cli, rid)["status"] == "pending"
    dp_cli("resume", "--pipeline", "flow", check=True)
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == ["a"]
    assert side_effects(tmp_path, "effects") == ["a -"]


def test_hold_pauses_a_running_run_at_its_next_call(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    (tmp_path / "gate.py").write_text(
        "import os, asyncio\nfrom pathlib import Path\nimport durapipe as dp\n"
        "@dp.step\nasync def wait_go() -> str:\n"
        "    while not (Path(os.environ['SIDE_DIR']) / 'go').exists():\n        await asyncio.sleep(0.05)\n    return 'go'\n"
        "@dp.step\ndef after() -> str:\n    return 'after'\n"
        "@dp.pipeline(name='gated', version='1')\nasync def gated() -> list:\n    return [await wait_go(), await after()]\n"
    )
    dp_spawn("worker", "-m", "gate.py")
    rid = dp_cli("start", "gate.py:gated", check=True).stdout.strip()
    wait_until(lambda: _show(dp_cli, rid)["status"] == "running", what="the run to be running")
    r = dp_cli("stop", "--pipeline", "gated", check=True)
    assert "1 running run(s)" in r.stdout
    (tmp_path / "go").write_text("")
    wait_until(
        lambda: (
            _show(dp_cli, rid)["status"] == "pending" and _show(dp_cli, rid)["waiting_for"] is None
        ),
        what="the run to pause",
    )
    doc = _show(dp_cli, rid)
    assert [e["kind"] for e in doc["events"]][
        -1
    ] == "step_completed"  # paused after wait_go, before after()
    dp_cli("resume", "--pipeline", "gated", check=True)
    wait_until(lambda: _show(dp_cli, rid)["status"] == "completed", what="the run to complete")
    assert _show(dp_cli, rid)["output"] == ["go", "after"]
