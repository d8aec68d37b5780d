"""Child handles, continue-as-new and tags as users run them: real processes, real SIGKILL,
SQLite and PostgreSQL (issue #16, items 4-6)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, client_call, side_effects, wait_until

H = str(PIPELINES / "handles.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _show(dp_cli: Cli, run_id: str) -> dict[str, Any]:
    return json.loads(dp_cli("show", run_id, "--json", check=True).stdout)


def _runs(dp_cli: Cli, *extra: str) -> list[dict[str, Any]]:
    return json.loads(dp_cli("list", "--json", "--limit", "10000", *extra, check=True).stdout)


def _last_json(p: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(p.stdout.strip().splitlines()[-1])


def _view(db_url: str, run_id: str) -> Any:
    """A run as the Client sees it, read in-process (where the CLI itself is not under test)."""

    async def get(c: Any) -> Any:
        return await c.get(run_id)

    return client_call(db_url, get)


def _views(db_url: str, **kw: Any) -> list[Any]:
    async def look(c: Any) -> Any:
        return await c.list(limit=10000, **kw)

    return list(client_call(db_url, look))


def _status(db_url: str, run_id: str) -> str:
    """A run's status, read in-process (polling through `durapipe show` costs a process a look)."""

    async def get(c: Any) -> str:
        return str((await c.get(run_id)).status)

    return str(client_call(db_url, get))


# ---------------------------------------------------------------- child handles


def test_five_children_started_without_waiting_survive_a_sigkill_exactly_once(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, db_url: str
) -> None:
    p = dp_spawn("run", f"{H}:five_kids")
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(
        lambda: "go-waiting" in side_effects(tmp_path, "effects"),
        what="the parent to have started three children",
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (tmp_path / "go").write_text("")
    r = dp_cli("resume", rid, env={"DURAPIPE_LEASE_TTL": "2"})
    assert r.returncode == 0, r.stderr
    assert _last_json(r) == 100  # 0 + 10 + 20 + 30 + 40
    kids = [k for k in _views(db_url) if k.parent_run_id == rid]
    assert len(kids) == 5  # exactly five children, whatever the kill interrupted
    assert sorted(k.inputs["i"] for k in kids) == [0, 1, 2, 3, 4]
    assert all(k.status == "completed" for k in kids)
    doc = _show(dp_cli, rid)
    assert sorted(doc["children"]) == sorted(k.run_id for k in kids)
    spawned = [e for e in doc["events"] if e["kind"] == "child_spawned"]
    assert len(spawned) == 5  # one start each, none recorded twice


def test_a_detached_child_outlives_its_parent_and_an_attached_one_is_cancelled(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, db_url: str
) -> None:
    r = dp_cli("run", f"{H}:leaves_children")
    assert r.returncode == 0, r.stderr
    out = _last_json(r)
    assert out["kept"] == "kept-child"  # the custom child id
    assert _status(db_url, out["dropped"]) == "cancelled"  # ended with its parent
    assert "lingering dropped unwound" in side_effects(tmp_path, "effects")
    kept = _show(dp_cli, "kept-child")
    assert kept["status"] == "pending" and kept["detached"] is True
    assert kept["parent_run_id"] == r.stdout.splitlines()[0]
    assert kept["root_run_id"] == "kept-child"  # a tree of its own
    # A worker takes the detached child after its parent ended, and it completes.
    dp_spawn("worker", "-m", H)
    (tmp_path / "kept").write_text("")
    wait_until(
        lambda: _status(db_url, "kept-child") == "completed",
        what="the detached child to complete",
    )
    assert _show(dp_cli, "kept-child")["output"] == "kept done"


def test_a_child_cancelled_through_its_handle(dp_cli: Cli) -> None:
    r = dp_cli("run", f"{H}:cancels_child")
    assert r.returncode == 0, r.stderr
    assert _last_json(r) == "child Cancelled"
    kinds = [e["kind"] for e in _show(dp_cli, r.stdout.splitlines()[0])["events"]]
    assert kinds.count("child_cancel_requested") == 1


# ---------------------------------------------------------------- continue-as-new


def test_a_chain_of_fifty_links_is_followed_by_result_wait(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, db_url: str
) -> None:
    first = dp_cli("start", f"{H}:chain", "--tag", "team=infra", check=True).stdout.strip()
    dp_spawn("worker", "-m", H)
    r = dp_cli("result", first, "--wait", "--timeout", "90", timeout=100)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 50
    runs = _runs(dp_cli, "--pipeline", "chain")
    assert len(runs) == 1  # list shows the live link of the chain
    last = runs[0]
    assert last["status"] == "completed" and last["inputs"]["n"] == 49
    assert last["tags"] == {"team": "infra", "chain": "yes"}  # tags carry over
    assert len(_views(db_url, pipeline="chain", status="continued")) == 49
    # Each link has a fresh, short history; show links both ways.
    doc = _show(dp_cli, first)
    assert doc["status"] == "continued" and doc["continued_as"]
    assert len(doc["events"]) <= 6
    assert _view(db_url, doc["continued_as"]).continued_from == first
    assert side_effects(tmp_path, "effects").count("link 0") == 1


def test_durapipe_run_follows_the_chain_here(dp_cli: Cli) -> None:
    r = dp_cli("run", f"{H}:chain", "--input", "links=4")
    assert r.returncode == 0, r.stderr
    assert _last_json(r) == 4
    assert r.stdout.count("Continued as new run") == 3


def test_stop_and_cancel_on_the_first_id_act_on_the_live_link(
    dp_cli: Cli, dp_spawn: Any, tmp_path: Path, db_url: str
) -> None:
    first = dp_cli("start", f"{H}:parks_at_the_end", check=True).stdout.strip()
    dp_spawn("worker", "-m", H, "--suspend-after", "0.2")

    def live() -> str | None:
        async def look(c: Any) -> str | None:
            runs = await c.list(pipeline="parks_at_the_end")
            ok = runs and runs[0].inputs.get("n") == 2 and runs[0].status == "waiting"
            return str(runs[0].run_id) if ok else None

        return client_call(db_url, look)  # type: ignore[no-any-return]

    last = wait_until(live, what="the last link to wait")
    r = dp_cli("stop", first)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: _status(db_url, last) == "stopped", what="the live link to stop")
    assert _show(dp_cli, first)["status"] == "continued"  # the ended link is left as it was
    r = dp_cli("cancel", first)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: _show(dp_cli, last)["status"] == "cancelled", what="the live link to cancel")
    assert "link 2 unwound" in side_effects(tmp_path, "effects")
    r = dp_cli("result", first)
    assert r.returncode == 1 and f"run {last} cancelled" in r.stderr


def test_a_parent_waits_for_a_child_that_continues_as_new(dp_cli: Cli) -> None:
    r = dp_cli("run", f"{H}:child_chain")
    assert r.returncode == 0, r.stderr
    assert _last_json(r) == 3


def test_a_suspended_parent_wakes_when_its_childs_chain_ends(dp_cli: Cli, dp_spawn: Any) -> None:
    rid = dp_cli("start", f"{H}:child_chain", check=True).stdout.strip()
    dp_spawn("worker", "-m", H, "--suspend-after", "0")  # the parent parks at once
    r = dp_cli("result", rid, "--wait", "--timeout", "60", timeout=70)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 3
    doc = _show(dp_cli, rid)
    assert [e["kind"] for e in doc["events"]].count("child_completed") == 1
    # Woken once, by the end of the chain: a link that continued does not wake it.
    assert doc["attempt"] <= 3, doc["attempt"]


# ---------------------------------------------------------------- tags


def test_tags_from_the_command_line_and_the_pipeline_are_found_and_anded(
    dp_cli: Cli, db_url: str
) -> None:
    a = dp_cli("run", f"{H}:tagged", "-i", "customer=acme", "--tag", "env=prod", check=True)
    b = dp_cli("run", f"{H}:tagged", "-i", "customer=zeta", "--tag", "env=prod", check=True)
    c = dp_cli("start", f"{H}:tagged", "-i", "customer=acme", "--tag", "env=dev", check=True)
    ida, idb, idc = a.stdout.splitlines()[0], b.stdout.splitlines()[0], c.stdout.strip()

    def ids(**tags: str) -> set[str]:
        return {v.run_id for v in _views(db_url, tags=tags)}

    found = _runs(dp_cli, "--tag", "env=prod", "--tag", "customer=acme")  # ANDed
    assert [r["run_id"] for r in found] == [ida]
    assert found[0]["tags"] == {"env": "prod", "customer": "acme", "tier": "platinum"}
    assert ids(env="prod") == {ida, idb}
    assert ids(customer="acme") == {ida}  # c has not run: its dp.tag never happened
    assert ids(tier="platinum") == {ida, idb}  # set again: the new value replaced the old
    assert ids(tier="gold") == set()
    assert ids(env="prod", customer="nobody") == set()
    assert "tags: customer=acme, env=prod, tier=platinum" in dp_cli("show", ida).stdout
    assert _view(db_url, idc).tags == {"env": "dev"}


# ---------------------------------------------------------------- bad input


def test_bad_tags_on_the_command_line_change_nothing(dp_cli: Cli, db_url: str) -> None:
    for args, says in [
        (["start", f"{H}:tagged", "-i", "customer=x", "--tag", "envprod"], "is not KEY=VALUE"),
        (
            ["run", f"{H}:tagged", "-i", "customer=x", "--tag", "bad key=1"],
            "not a short identifier",
        ),
        (["start", f"{H}:tagged", "-i", "customer=x", "--tag", "=1"], "not a short identifier"),
        (["list", "--tag", "x"], "is not KEY=VALUE"),
    ]:
        r = dp_cli(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert _views(db_url) == []


def test_bad_calls_inside_a_pipeline_fail_the_run_in_one_line_and_start_nothing(
    dp_cli: Cli, db_url: str
) -> None:
    taken = dp_cli("start", f"{H}:kid", "-i", "i=1", check=True).stdout.strip()
    cases = [
        ([f"{H}:bad_continue"], "dp.continue_as_new: pipeline 'bad_continue' has no input 'nope'"),
        ([f"{H}:bad_start"], "dp.start_subpipeline: pipeline 'kid' has no input 'nope'"),
        ([f"{H}:taken_id", "-i", f"other={taken}"], f"run id '{taken}' is already used"),
        ([f"{H}:bad_tag"], "dp.tag key 'not a key' is not a short identifier"),
    ]
    for args, says in cases:
        r = dp_cli("run", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert says in r.stderr, r.stderr  # the run's error, in one line
        view = _view(db_url, r.stdout.splitlines()[0])
        assert view.status == "failed" and says in view.error["message"], view.error
    assert len(_views(db_url)) == 1 + len(cases)  # no child, no successor was created
