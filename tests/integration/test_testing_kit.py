"""durapipe.testing as a user meets it: the pytest plugin's fixtures and the helpers.

Tests marked ``both`` run on SQLite and on PostgreSQL: for PostgreSQL they set
DURAPIPE_TEST_DATABASE_URL, as a user's CI would, and the plugin makes a database per test.

tests/histories/deploy_approved.json is real `durapipe show RUN_ID --json` output of
examples/deploy.py, made with:

    durapipe run examples/deploy.py:deploy --input version=2.0.1 --input env=production
    durapipe input RUN_ID approve true
    durapipe show RUN_ID --json > tests/histories/deploy_approved.json
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

import durapipe as dp
from durapipe._definition import load_target
from durapipe.testing import (
    crash_run,
    replay,
    resume_run,
    run_pipeline,
    send_input,
    stop_run,
    wait_for_status,
)

# An installed durapipe loads the plugin by its entry point; a checkout needs it named.
if not any(ep.value == "durapipe.testing" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["durapipe.testing"]

HISTORY = Path(__file__).resolve().parent.parent / "histories" / "deploy_approved.json"
DEPLOY_SRC = (ROOT / "examples" / "deploy.py").read_text()


@pytest.fixture(params=["sqlite", "postgresql"])
def kit_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the plugin at SQLite (no env) or at the suite's PostgreSQL server."""
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        if server is None:
            pytest.skip("no PostgreSQL server available")
        monkeypatch.setenv("DURAPIPE_TEST_DATABASE_URL", server)
    else:
        monkeypatch.delenv("DURAPIPE_TEST_DATABASE_URL", raising=False)
    return str(request.param)


both = pytest.mark.usefixtures("kit_database")

CALLS: dict[str, list[str]] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


@dp.step
def charge(order: str) -> str:
    key = dp.context().step_id or "?"
    CALLS.setdefault("charge", []).append(key)
    return f"charged {order}"


@dp.step
def ship(order: str) -> str:
    CALLS.setdefault("ship", []).append(order)
    return f"shipped {order}"


@dp.pipeline(name="kit_order", version="1")
async def order_flow(order: str = "o-1") -> list[str]:
    return [await charge(order), await ship(order)]


@dp.pipeline(name="kit_week", version="1")
async def week_long() -> float:
    start = await dp.now()
    await dp.sleep(7 * 86400)
    return await dp.now() - start


@dp.pipeline(name="kit_approval", version="1")
async def approval() -> dict[str, Any]:
    ok = await dp.await_input("approve", prompt="ship it?")
    return {"approved": ok, "shipped": await ship("o-2") if ok else None}


@dp.pipeline(name="kit_exec", version="1")
async def slow_command(flag: str) -> str:
    out = await dp.exec("sh", "-c", '[ -e "$1" ] || sleep 60; echo done', "sh", flag)
    return str(out.stdout.strip())


# ---------------------------------------------------------------------- fixtures


@both
def test_durapipe_db_is_a_fresh_migrated_database(durapipe_db: str, kit_database: str) -> None:
    assert durapipe_db.startswith("sqlite:///" if kit_database == "sqlite" else "postgresql://")

    async def look() -> list[Any]:
        async with await dp.Client.connect(durapipe_db, migrate=False) as client:
            return await client.list()

    assert asyncio.run(look()) == []  # migrated (migrate=False would refuse otherwise) and empty


@both
@pytest.mark.asyncio
async def test_seven_day_sleep_finishes_at_once_and_moves_the_clock(
    durapipe_store: Any, durapipe_clock: Any
) -> None:
    t0 = time.monotonic()
    view = await run_pipeline(durapipe_store, week_long, clock=durapipe_clock)
    assert time.monotonic() - t0 < 2.0  # about 20 ms on an idle machine; no real waiting
    assert view.status == "completed"
    assert view.output >= 7 * 86400  # dp.now() saw the week go by
    kinds = [e.kind for e in await durapipe_store.events(view.run_id) if e.step]
    assert "timer_started" in kinds and "timer_fired" in kinds


# ---------------------------------------------------------------------- inputs and stop


@both
@pytest.mark.asyncio
async def test_send_input_to_a_waiting_run(durapipe_store: Any) -> None:
    running = asyncio.ensure_future(run_pipeline(durapipe_store, approval, run_id="kit-input-1"))
    waiting = await wait_for_status(durapipe_store, "kit-input-1", "waiting")
    assert waiting.waiting_for["input"] == "approve"
    await send_input(durapipe_store, "kit-input-1", "approve", True)
    view = await asyncio.wait_for(running, 20)
    assert view.status == "completed" and view.output == {
        "approved": True,
        "shipped": "shipped o-2",
    }


@both
@pytest.mark.asyncio
async def test_stop_run_then_resume_run(durapipe_store: Any) -> None:
    running = asyncio.ensure_future(run_pipeline(durapipe_store, approval, run_id="kit-stop-1"))
    await wait_for_status(durapipe_store, "kit-stop-1", "waiting")
    assert await stop_run(durapipe_store, "kit-stop-1") == "requested"  # held: it stops itself
    assert (await asyncio.wait_for(running, 20)).status == "stopped"
    await send_input(durapipe_store, "kit-stop-1", "approve", False)
    view = await resume_run(durapipe_store, approval, "kit-stop-1")
    assert view.status == "completed" and view.output == {"approved": False, "shipped": None}
    # A queued run nobody holds is stopped at once.
    queued = await dp.Client(durapipe_store).start(approval)
    assert await stop_run(durapipe_store, queued) == "stopped"
    assert (await dp.Client(durapipe_store).get(queued)).status == "stopped"


# ---------------------------------------------------------------------- crashes


@both
@pytest.mark.asyncio
async def test_crash_before_a_completion_runs_the_step_again_with_the_same_id(
    durapipe_store: Any,
) -> None:
    view = await crash_run(durapipe_store, order_flow, before="step_completed:charge")
    assert (
        view.status == "running" and view.lease_owner is not None
    )  # as a killed process leaves it
    assert [e.kind for e in await durapipe_store.events(view.run_id)] == ["run_started"]
    assert len(CALLS["charge"]) == 1  # the body ran; its completion was lost
    done = await resume_run(durapipe_store, order_flow, view.run_id)
    assert done.status == "completed" and done.output == ["charged o-1", "shipped o-1"]
    first, again = CALLS["charge"]
    assert first == again == f"{view.run_id}.1"  # at-least-once, with a stable idempotency key
    assert CALLS["ship"] == ["o-1"]


@both
@pytest.mark.asyncio
async def test_crash_after_a_commit_does_not_run_the_step_again(durapipe_store: Any) -> None:
    view = await crash_run(
        durapipe_store, order_flow, after=lambda e: e["kind"] == "step_completed", order="o-9"
    )
    kinds = [e.kind for e in await durapipe_store.events(view.run_id)]
    assert kinds == ["run_started", "step_started", "step_completed"]
    assert "ship" not in CALLS  # nothing ran past the crash
    done = await resume_run(durapipe_store, order_flow, view.run_id)
    assert done.output == ["charged o-9", "shipped o-9"]
    assert len(CALLS["charge"]) == 1 and CALLS["ship"] == ["o-9"]


@both
@pytest.mark.asyncio
async def test_crash_during_a_command_kills_it_and_it_runs_again(
    durapipe_store: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    t0 = time.monotonic()
    view = await crash_run(durapipe_store, slow_command, after="step_started:exec", flag=str(flag))
    assert time.monotonic() - t0 < 10  # the 60 s command was killed with the "process"
    flag.write_text("")
    done = await resume_run(durapipe_store, slow_command, view.run_id)
    assert done.status == "completed" and done.output == "done"
    kinds = [e.kind for e in await durapipe_store.events(view.run_id)]
    assert kinds.count("step_started") == 2 and kinds.count("step_completed") == 1


@pytest.mark.asyncio
async def test_crash_run_that_never_reaches_its_point_fails_the_test(durapipe_store: Any) -> None:
    with pytest.raises(AssertionError, match="without reaching the crash point"):
        await crash_run(durapipe_store, order_flow, after="timer_fired")
    with pytest.raises(TypeError, match="exactly one"):
        await crash_run(durapipe_store, order_flow)


# ---------------------------------------------------------------------- replay


def _deploy_variant(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Any:
    src = DEPLOY_SRC
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    path = tmp_path / f"{name}.py"
    path.write_text(src)
    return load_target(f"{path}:deploy")


@pytest.mark.asyncio
async def test_committed_history_replays_against_the_example() -> None:
    deploy = load_target(str(ROOT / "examples" / "deploy.py") + ":deploy")
    result = await replay(HISTORY, deploy)
    recorded = json.loads(HISTORY.read_text())
    assert result.completed and result.frontier is None
    assert result.output == recorded["output"]
    assert result.replayed == 4  # build, approve, exec, release_notes
    assert (await replay(recorded["events"], deploy)).output == recorded["output"]  # a bare list


@pytest.mark.asyncio
async def test_replay_of_an_unfinished_history_stops_where_the_run_would_go_on() -> None:
    doc = json.loads(HISTORY.read_text())
    doc["events"] = [e for e in doc["events"] if e["seq"] <= 4]  # up to input_requested
    result = await replay(doc, load_target(str(ROOT / "examples" / "deploy.py") + ":deploy"))
    assert not result.completed and result.frontier == "2" and result.replayed == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("edits", "needle"),
    [
        (  # the approval moved before the build
            [
                ("    built = await dp.run_subpipeline(build, version=version)\n", ""),
                (
                    '    artifact = built["artifact"]\n',
                    "",
                ),
                (
                    '    approved = await dp.await_input("approve", prompt=f"Deploy {artifact} to {env}?")\n',
                    '    approved = await dp.await_input("approve")\n'
                    "    built = await dp.run_subpipeline(build, version=version)\n"
                    '    artifact = built["artifact"]\n',
                ),
            ],
            "at step 1: the history recorded child 'build', the code now does input 'approve'",
        ),
        (  # a step renamed
            [("@dp.step\ndef release_notes", "@dp.step(name='notes')\ndef release_notes")],
            "at step 4: the history recorded step 'release_notes', the code now does step 'notes'",
        ),
        (  # the last call removed
            [("    notes = await release_notes(version, artifact, env)\n", '    notes = ""\n')],
            "at step 4: the history recorded step 'release_notes', the code now does nothing: "
            "the pipeline returned before reaching it",
        ),
    ],
    ids=["reordered", "renamed", "removed"],
)
async def test_changed_code_is_caught_by_replay(
    tmp_path: Path, edits: list[tuple[str, str]], needle: str
) -> None:
    changed = _deploy_variant(tmp_path, "changed", *edits)
    with pytest.raises(dp.NonDeterminismError) as caught:
        await replay(str(HISTORY), changed)
    assert needle in str(caught.value)
    assert caught.value.run_id == json.loads(HISTORY.read_text())["run_id"]


@pytest.mark.asyncio
async def test_a_call_added_at_the_end_replays_and_continues_live(tmp_path: Path) -> None:
    added = _deploy_variant(
        tmp_path,
        "added",
        ('    return {"deployed": True', '    await dp.exec("true")\n    return {"deployed": True'),
    )
    result = await replay(HISTORY, added)
    assert not result.completed and result.frontier == "5" and result.replayed == 4


@pytest.mark.asyncio
async def test_a_pinned_history_meets_another_version(tmp_path: Path) -> None:
    bumped = _deploy_variant(
        tmp_path,
        "bumped",
        ('@dp.pipeline(version="1", pin=True)', '@dp.pipeline(version="2", pin=True)'),
    )
    with pytest.raises(dp.VersionMismatch, match="version '1' but the code is now version '2'"):
        await replay(HISTORY, bumped)
    with pytest.raises(ValueError, match="of pipeline 'deploy', not 'kit_order'"):
        await replay(HISTORY, order_flow)


@both
@pytest.mark.asyncio
async def test_history_exported_from_a_test_run_replays(durapipe_store: Any) -> None:
    view = await run_pipeline(durapipe_store, order_flow, order="o-5")
    doc = {**view.to_json(), "events": await dp.Client(durapipe_store).events(view.run_id)}
    doc = json.loads(json.dumps(doc))  # what a file would hold
    result = await replay(doc, order_flow)
    assert result.completed and result.output == view.output
    assert len(CALLS["charge"]) == 1  # replay ran nothing

    @dp.pipeline(name="kit_order", version="1")
    async def reordered(order: str = "o-1") -> list[str]:
        return [await ship(order), await charge(order)]

    with pytest.raises(
        dp.NonDeterminismError, match="recorded step 'charge', the code now does step 'ship'"
    ):
        await replay(doc, reordered)


USER_TEST = """
import pytest
import durapipe as dp
from durapipe.testing import run_pipeline


@dp.pipeline(version="1")
async def nap() -> str:
    await dp.sleep(30 * 86400)
    return "a month later"


@pytest.mark.asyncio
async def test_nap(durapipe_store, durapipe_clock):
    view = await run_pipeline(durapipe_store, nap, clock=durapipe_clock)
    assert view.output == "a month later"


def test_db(durapipe_db):
    assert durapipe_db.startswith("sqlite:///")
"""


def test_plugin_loads_in_a_user_project(tmp_path: Path) -> None:
    """A project of a user's own: no conftest, warnings are errors, fixtures come from the plugin."""
    import os
    import subprocess
    import sys

    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    (tmp_path / "test_user.py").write_text(USER_TEST)
    installed = any(ep.value == "durapipe.testing" for ep in entry_points(group="pytest11"))
    # (PYTEST_*: under pytest-xdist the inner pytest would think it is a worker too.)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURAPIPE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ([] if installed else ["-p", "durapipe.testing"]),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
