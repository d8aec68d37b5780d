"""durapipe fork and durapipe edit as an operator uses them (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

from conftest import PIPELINES, client_call, side_effects, wait_until

from durapipe.errors import InvalidInput

REPAIR = str(PIPELINES / "repair.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _runs(dp_cli: Cli) -> list[dict[str, Any]]:
    return json.loads(dp_cli("list", "--json", "--limit", "1000", check=True).stdout)


def _output(p: subprocess.CompletedProcess[str]) -> Any:
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def _effects(tmp_path: Path, run_id: str) -> list[str]:
    """What run ``run_id`` (and its children) did for real, in order."""
    lines = side_effects(tmp_path, "effects")
    return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == run_id]


def test_fork_from_each_kind_of_call_reruns_only_what_follows(
    dp_cli: Cli,
    dp_spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    db_url: str,
) -> None:
    first = _output(dp_cli("run", f"{REPAIR}:release", "--run-id", "orig", "--no-timestamps"))
    everything = ["fetch", "exec", "child 1", "deploy a", "deploy b", "verify app:1"]
    assert sorted(_effects(tmp_path, "orig")) == sorted(everything)
    # The fork point (as `show` prints it) -> what runs again: everything at or after it.
    cases = {
        "1": everything,  # a @dp.step (and --from 1 starts over)
        "exec_1": everything[1:],  # a dp.exec, named as show names it
        "3": everything[2:],  # a dp.sleep
        "4": everything[2:],  # a dp.await_input
        "5": everything[2:],  # a child run
        "6/1/1": ["deploy b", "verify app:1"],  # a dp.gather branch: branch 0 is kept
        "7": ["verify app:1"],
    }
    forks = {f"fork-{p.replace('/', '-')}": p for p in cases}

    async def fork_all(c: Any) -> None:
        for new, point in forks.items():
            assert await c.fork("orig", from_step=point, new_run_id=new) == new

    client_call(db_url, fork_all)
    dp_spawn("worker", "-m", REPAIR, "--concurrency", "8")

    async def look(c: Any) -> Any:
        runs = await c.list(limit=1000)
        if any(r.status != "completed" for r in runs):
            return None
        links = {r.run_id: await c.store.fork_links(r.run_id) for r in runs}
        started = {r.run_id: (await c.events(r.run_id))[0] for r in runs}
        return runs, links, started

    runs, links, started = wait_until(
        lambda: client_call(db_url, look), timeout=90, what="the forks to complete"
    )
    for new, point in forks.items():
        assert next(r for r in runs if r.run_id == new).output == first
        assert sorted(_effects(tmp_path, new)) == sorted(cases[point]), point
        key = "2" if point == "exec_1" else point
        source, _ = links[new]
        assert (source.source_run_id, source.step) == ("orig", key)
        assert started[new]["data"]["forked_from"] == {"run_id": "orig", "step": key, "by": ANY}
        # A child before the fork point is reused as a result: no second child.
        mine = [r for r in runs if r.parent_run_id == new]
        assert len(mine) == (1 if "child 1" in cases[point] else 0), point
    assert sorted(f.run_id for f in links["orig"][1]) == sorted(forks)
    assert _effects(tmp_path, "orig") == everything[:2] + _effects(tmp_path, "orig")[2:]
    assert "forked as fork-7 from step 7" in dp_cli("show", "orig", check=True).stdout
    doc = _show(dp_cli, "fork-7")
    assert doc["forked_from"]["run_id"] == "orig" and doc["forked_from"]["step"] == "7"
    # The CLI runs a fork here (the default, as resume does) and prints its output.
    p = dp_cli("fork", "orig", "--from", "6/0/1", "--run-id", "here", "--no-timestamps")
    assert _output(p) == first and p.stdout.splitlines()[0] == "here"
    assert sorted(_effects(tmp_path, "here")) == ["deploy a", "deploy b", "verify app:1"]


def test_fork_of_a_failed_run_defaults_to_the_failed_step_with_new_inputs(
    dp_cli: Cli, tmp_path: Path
) -> None:
    p = dp_cli("run", f"{REPAIR}:rollout", "--run-id", "bad", "--no-timestamps")
    assert p.returncode == 1 and "app:bad does not exist" in p.stderr
    assert _show(dp_cli, "bad")["status"] == "failed"
    p = dp_cli("fork", "bad", "--start", "--run-id", "queued")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "queued" and "at step 3" in p.stderr
    assert _show(dp_cli, "queued")["status"] == "pending"  # left to the workers
    # --from 1 with another input is a fresh run of the current code, linked back.
    p = dp_cli("fork", "bad", "--from", "1", "--input", "n=good", "--no-timestamps")
    assert _output(p) == {"part": "a=app:good", "verify": "ok"}
    new = p.stdout.splitlines()[0]
    assert _effects(tmp_path, new) == ["fetch", "deploy a", "verify app:good"]


def test_edit_a_failed_run_and_resume_with_the_new_value(dp_cli: Cli, tmp_path: Path) -> None:
    dp_cli("run", f"{REPAIR}:rollout", "--run-id", "r", "--no-timestamps")
    assert _effects(tmp_path, "r") == ["fetch", "deploy a", "verify app:bad"]
    p = dp_cli(
        "edit", "r", "fetch_manifest_1", "--result", '{"image": "app:good"}',
        "--reason", "typo in the manifest", "--by", "alice",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "durapipe resume r" in p.stdout
    doc = _show(dp_cli, "r")
    edit = [e for e in doc["events"] if e["kind"] == "result_edited"]
    assert len(edit) == 1 and edit[0]["step"] == "1"
    data = edit[0]["data"]
    assert data["old"]["data"] == {"result": {"image": "app:bad"}}
    assert data["new"] == {"image": "app:good"}
    assert data["reason"] == "typo in the manifest" and data["by"] == "alice"
    assert data["rerun_after"] is True
    text = dp_cli("show", "r", check=True).stdout
    assert "edited" in text and "discarded by an edit" in text
    out = _output(dp_cli("resume", "r", "--no-timestamps"))
    assert out == {"part": "a=app:good", "verify": "ok"}
    # fetch is not run again (its edited value replays); the steps after it are.
    assert _effects(tmp_path, "r")[3:] == ["deploy a", "verify app:good"]
    events = _show(dp_cli, "r")["events"]
    assert any(e["kind"] == "step_completed" and e["step"] == "1" for e in events)  # kept
    # The edit stays in the history after the run completes; a replay still returns its value.
    assert sum(e["kind"] == "result_edited" for e in events) == 1


def test_edit_keep_after_supersedes_only_that_step(dp_cli: Cli, tmp_path: Path) -> None:
    dp_cli("run", f"{REPAIR}:rollout", "--run-id", "k", "--no-timestamps")
    p = dp_cli(
        "edit", "k", "3", "--result", '"checked by hand"', "--reason", "verified manually",
        "--keep-after",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = _output(dp_cli("resume", "k", "--no-timestamps"))
    assert out == {"part": "a=app:bad", "verify": "checked by hand"}
    assert _effects(tmp_path, "k") == ["fetch", "deploy a", "verify app:bad"]


def _unchanged(db_url: str, run_id: str) -> Callable[[], None]:
    async def look(c: Any) -> Any:
        return await c.events(run_id), await c.get(run_id), len(await c.list(limit=1000))

    before = client_call(db_url, look)

    def check() -> None:
        assert client_call(db_url, look) == before

    return check


def _refused(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_bad_input_is_one_line_and_changes_nothing(dp_cli: Cli, db_url: str) -> None:
    dp_cli("run", f"{REPAIR}:rollout", "--run-id", "b", "--no-timestamps")
    dp_cli("run", f"{REPAIR}:rollout", "--run-id", "done", "--input", "n=ok", "--no-timestamps")
    check = _unchanged(db_url, "b")
    ok = ("--result", "{}", "--reason", "why")
    _refused(dp_cli("fork", "b", "--from", "nope_1"), "no step 'nope_1'")
    _refused(dp_cli("fork", "b", "--from", "9"), "after the last recorded call")
    _refused(dp_cli("fork", "b", "--from", "2/0/1"), "no call at step 2/0/1")
    _refused(dp_cli("fork", "b", "--run-id", "done"), "taken")
    _refused(dp_cli("fork", "b", "--input", "bogus=1"), "bogus")
    _refused(dp_cli("fork", "missing"), "missing")
    _refused(dp_cli("edit", "b", "9", *ok), "after the last recorded call")
    _refused(dp_cli("edit", "b", "1", "--result", "{not json", "--reason", "x"), "not valid JSON")
    _refused(dp_cli("edit", "b", "1", "--result", "{}"), "--reason")

    async def edit(c: Any, result: Any, reason: str) -> str:
        try:
            await c.edit("b", "1", result, reason=reason)
        except InvalidInput as exc:
            return str(exc)
        raise AssertionError("edited")

    too_big = client_call(db_url, lambda c: edit(c, "x" * 1_100_000, "x"))
    assert "the limit is 1,000,000 bytes" in too_big
    assert "--reason" in client_call(db_url, lambda c: edit(c, {}, "  "))
    _refused(dp_cli("edit", "b", "1", "--reason", "x"), "--result")
    _refused(dp_cli("edit", "done", "1", *ok), "has ended (completed)", "durapipe fork done")
    check()


def test_fork_and_edit_refuse_a_held_run_and_a_pinned_run_on_another_version(
    dp_cli: Cli, dp_spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path, db_url: str
) -> None:
    proc = dp_spawn("run", f"{REPAIR}:held", "--run-id", "h", "--pin", "--no-timestamps")
    wait_until(lambda: "holding" in _effects(tmp_path, "h"), what="the step to run")
    # Its start is written a moment after the step began (RunContext.post): the history is
    # still for the run to change until then, not for the refused commands below.
    wait_until(
        lambda: any(
            e["kind"] == "step_started" and e["name"] == "hold_on"
            for e in client_call(db_url, lambda c: c.events("h"))
        ),
        what="the step's start to be recorded",
    )
    check = _unchanged(db_url, "h")
    _refused(dp_cli("fork", "h", "--from", "2"), "held by", "durapipe stop h")
    _refused(dp_cli("edit", "h", "1", "--result", "{}", "--reason", "x"), "durapipe stop h")
    check()
    (tmp_path / "go").touch()
    assert proc.wait(timeout=60) == 0
    v2 = {"REPAIR_VERSION": "2"}
    _refused(dp_cli("fork", "h", "--from", "2", env=v2), "pinned to version 1")
    assert dp_cli("fork", "h", "--from", "2", "--run-id", "h2", "--start").returncode == 0
