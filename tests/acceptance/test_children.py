"""Sub-pipelines and deterministic parallelism, as users run them."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, side_effects, wait_until

FAMILY = str(PIPELINES / "family.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _runs(dp_cli: Cli, *extra: str) -> list[dict[str, Any]]:
    return json.loads(dp_cli("list", "--json", "--limit", "10000", *extra, check=True).stdout)


def test_child_output_flows_into_the_parent_and_logs_nest(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{FAMILY}:deploy", "--input", "sha=f00d")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.splitlines()[0]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"deployed": "registry/app:f00d"}
    assert any(
        "[deploy.build_image_1.exec_1" in line and "building f00d" in line
        for line in p.stdout.splitlines()
    )
    runs = _runs(dp_cli)
    assert len(runs) == 2
    child = next(r for r in runs if r["run_id"] != rid)
    assert (
        child["parent_run_id"] == rid
        and child["root_run_id"] == rid
        and child["status"] == "completed"
    )
    assert [r["run_id"] for r in _runs(dp_cli, "--roots")] == [rid]
    assert _show(dp_cli, rid)["children"] == [child["run_id"]]
    tree = dp_cli("show", rid, check=True).stdout
    assert child["run_id"] in tree
    logs = dp_cli("logs", rid, "--no-timestamps", check=True).stdout
    assert "[deploy.build_image_1.exec_1" in logs  # one log for the whole tree


def test_child_failure_surfaces_in_the_parent(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{FAMILY}:deploy_broken")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "failed: broken because tested" in out
    child = next(r for r in _runs(dp_cli) if r["parent_run_id"])
    assert child["status"] == "failed" and child["run_id"] in out


def test_parent_crash_after_starting_child_makes_exactly_one_child(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{FAMILY}:parent_of_slow")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: "child-start" in side_effects(tmp_path, "effects"), what="the child to be running"
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    r = dp_cli("resume", rid, env={"DURAPIPE_LEASE_TTL": "2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == '"child done"'
    runs = _runs(dp_cli)
    assert len(runs) == 2  # exactly one child
    effects = side_effects(tmp_path, "effects")
    assert effects.count("child after go") == 1 and effects.count("parent after child") == 1


def test_gather_branches_in_random_order_crash_resume_no_nondeterminism(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{FAMILY}:fan", "--input", "n=8")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: "after-gather-start" in side_effects(tmp_path, "effects"),
        what="the first gather to finish",
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    r = dp_cli("resume", rid)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [f"j{i}" for i in range(8)] + [
        f"k{i}" for i in range(8)
    ]
    effects = collections.Counter(side_effects(tmp_path, "effects"))
    assert all(effects[f"j{i}"] == 1 and effects[f"k{i}"] == 1 for i in range(8))
    steps = {e["step"] for e in _show(dp_cli, rid)["events"] if e["step"]}
    assert {"1/0/1", "1/7/1", "3/0/1"} <= steps  # each branch has its own key space


def test_three_levels_of_nesting(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{FAMILY}:level1", "--input", "x=1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "9"  # ((1+1)*3 + 2) + 1
    runs = _runs(dp_cli)
    assert len(runs) == 3 and len({r["root_run_id"] for r in runs}) == 1


def test_cancel_of_a_parent_cancels_its_running_children(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    p = dp_spawn("run", f"{FAMILY}:parent_cancelled")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]

    def children_sleeping() -> bool:
        kids = [r for r in _runs(dp_cli) if r["parent_run_id"] == rid]
        return len(kids) == 2 and all(k["status"] == "sleeping" for k in kids)

    wait_until(children_sleeping, what="both children to sleep")
    dp_cli("cancel", rid, check=True)
    p.communicate(timeout=60)
    wait_until(
        lambda: all(r["status"] == "cancelled" for r in _runs(dp_cli)),
        timeout=30,
        what="the whole tree to be cancelled",
    )
    assert side_effects(tmp_path, "effects").count("child cleanup") == 2


def test_fan_out_of_500_children_completes_on_two_workers(
    db_url: str, dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    env = {"DURAPIPE_POLL_INTERVAL": "0.2"}
    for _ in range(2):
        dp_spawn("worker", "-m", FAMILY, "--concurrency", "100", env=env)
    rid = dp_cli(
        "start", f"{FAMILY}:fan_out", "--input", "n=500", "--input", "limit=50", check=True
    ).stdout.strip()
    p = dp_cli("result", rid, "--wait", "--timeout", "240", timeout=260)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(sum(range(500)))
    assert len(side_effects(tmp_path, "effects")) == 500
    assert len(_runs(dp_cli)) == 501


@pytest.mark.parametrize(
    ("pipeline", "needle"),
    [
        ("bad_child_target", "needs a pipeline"),
        ("bad_child_inputs", "has no input 'colour'"),
        ("forever", "nest deeper than 20 levels"),
    ],
)
def test_bad_children_fail_clearly(dp_cli: Cli, pipeline: str, needle: str) -> None:
    p = dp_cli("run", f"{FAMILY}:{pipeline}", timeout=120)
    assert p.returncode == 1 and needle in p.stderr, p.stderr
