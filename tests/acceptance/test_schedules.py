"""Schedules as a user runs them: `durapipe schedule ...` and real worker processes, real
SIGKILL of the worker that fires. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import PIPELINES, client_call, wait_until

import durapipe as dp
from durapipe import _schedules as sch

MOD = str(PIPELINES / "scheduled.py")
CODE = str(PIPELINES / "scheduled_code.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _schedule(db_url: str, name: str) -> Any:
    return client_call(db_url, lambda c: c.get_schedule(name))


def _runs(db_url: str, name: str) -> list[Any]:
    async def fn(c: Any) -> list[Any]:
        return [v for v in await c.list(limit=100_000) if v.schedule == name]

    return sorted(client_call(db_url, fn), key=lambda v: v.scheduled_at)


def _started_by(db_url: str, run_id: str) -> int | None:
    events = client_call(db_url, lambda c: c.events(run_id))
    return events[0]["data"].get("pid") if events else None


def _add(db_url: str, name: str, pipeline: str, spec: Any) -> float:
    """Add a schedule through the Client (the CLI's add is tested below); -> its first tick."""
    return float(client_call(db_url, lambda c: c.add_schedule(name, pipeline, spec)).next_fire_at)


def _pause(db_url: str, *names: str) -> None:
    async def fn(c: Any) -> None:
        for name in names:
            await c.pause_schedule(name)

    client_call(db_url, fn)


def _worker(dp_spawn: Any, module: str = MOD, **env: str) -> subprocess.Popen[str]:
    return dp_spawn("worker", "-m", module, env={**FAST, **env})


def _stop(workers: list[subprocess.Popen[str]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=60)


def test_three_workers_sigkilled_while_firing_start_each_tick_once(
    db_url: str, dp_cli: Any, dp_spawn: Any
) -> None:
    dp_cli(
        "schedule", "add", "beat", f"{MOD}:tick", "--every", "1s",
        "--overlap", "allow", "--catch-up", "all", "--input", "n=1",
        check=True,
    )  # fmt: skip
    first = _schedule(db_url, "beat").next_fire_at
    workers = [_worker(dp_spawn) for _ in range(3)]
    kills = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Just after a tick: whoever fired the last one is likely firing this one now.
        time.sleep(1 - time.time() % 1 + 0.003 * (kills % 5))
        runs = _runs(db_url, "beat")
        if not runs:
            continue
        pid = _started_by(db_url, runs[-1].run_id)
        victim = next((w for w in workers if w.pid == pid and w.poll() is None), None)
        if victim is None:
            continue
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        kills += 1
        workers.append(_worker(dp_spawn))
    _pause(db_url, "beat")
    last = _schedule(db_url, "beat").last_tick_at
    assert kills >= 2
    # Every tick from the schedule's first to its last has exactly one run, and each ran.
    ticks = sch.ticks_between("every", "1", "UTC", first, last, most=100)
    assert len(ticks) >= 8
    wait_until(
        lambda: all(v.status == "completed" for v in _runs(db_url, "beat")),
        timeout=60,
        interval=0.2,
        what="every tick's run to complete",
    )
    runs = _runs(db_url, "beat")
    assert [v.scheduled_at for v in runs] == ticks
    assert [v.run_id for v in runs] == [sch.tick_run_id("beat", t) for t in ticks]
    assert all(
        v.output == {"schedule": "beat", "scheduled_at": v.scheduled_at, "n": 1} for v in runs
    )
    _stop(workers)


def test_catch_up_policies_after_a_gap_without_workers(
    db_url: str, dp_cli: Any, dp_spawn: Any
) -> None:
    firsts = {
        p: _add(db_url, f"gap-{p}", f"{MOD}:tick", dp.Every("1s", overlap="allow", catch_up=p))
        for p in ("none", "last", "all")
    }
    # No worker for four ticks (at least).
    wait_until(lambda: time.time() > max(firsts.values()) + 3.2, timeout=10, what="the gap")
    worker = _worker(dp_spawn)
    wait_until(
        lambda: all(len(_runs(db_url, f"gap-{p}")) >= 2 for p in ("none", "last", "all")),
        timeout=60,
        what="every schedule to fire after the gap",
    )
    _pause(db_url, "gap-none", "gap-last", "gap-all")
    _stop([worker])
    # The first run a worker started for each schedule shows where it took up again.
    runs = {p: _runs(db_url, f"gap-{p}") for p in ("none", "last", "all")}
    back = min(v.created_at for vs in runs.values() for v in vs)  # the worker's first firing
    gap = sch.ticks_between("every", "1", "UTC", firsts["all"], back - 0.5, most=1000)
    # 3.2 s without a worker: three ticks at least are half a period older than its first firing
    # (four, unless the worker starts within 0.3 s).
    assert len(gap) >= 3
    # all: every tick of the gap, and after it every tick, none twice.
    ticks = [v.scheduled_at for v in runs["all"]]
    assert ticks == sch.ticks_between("every", "1", "UTC", firsts["all"], ticks[-1], most=1000)
    # last: of the gap's ticks only the latest one ran (the last due when the worker looked),
    # then every tick, none twice. (Counting the runs scheduled before `back` instead failed
    # when the first firing came just after a tick: that tick then counted too.)
    last = [v.scheduled_at for v in runs["last"]]
    assert last[0] >= back - 1.1
    assert last == sch.ticks_between("every", "1", "UTC", last[0], last[-1], most=1000)
    assert _schedule(db_url, "gap-last").skipped >= len(gap) - 1
    # none: no tick of the gap ran, only ticks that were on time (half a period's grace).
    assert all(v.scheduled_at >= back - 0.6 for v in runs["none"])
    assert _schedule(db_url, "gap-none").skipped >= len(gap) - 1


def test_overlap_skip_and_queue_with_runs_longer_than_the_interval(
    db_url: str, dp_cli: Any, dp_spawn: Any
) -> None:
    # queue with catch-up `all`: every tick waits its turn, so each run's tick is one that came
    # while the run before it still went.
    _add(db_url, "skip", f"{MOD}:slow", dp.Every(1, overlap="skip", inputs={"seconds": 1.3}))
    _add(
        db_url,
        "queue",
        f"{MOD}:slow",
        dp.Every(1, overlap="queue", catch_up="all", inputs={"seconds": 1.3}),
    )
    worker = _worker(dp_spawn)
    wait_until(
        lambda: all(
            len([v for v in _runs(db_url, o) if v.status == "completed"]) >= 2
            for o in ("skip", "queue")
        ),
        timeout=60,
        interval=0.2,
        what="two runs of each schedule to complete",
    )
    _pause(db_url, "skip", "queue")
    _stop([worker])
    for overlap in ("skip", "queue"):
        done = [v for v in _runs(db_url, overlap) if v.finished_at is not None]
        assert len(done) >= 2
        for prev, nxt in zip(done, done[1:], strict=False):
            assert nxt.created_at >= prev.finished_at  # never two at once
            if overlap == "skip":  # the ticks while it ran were skipped
                assert nxt.scheduled_at >= prev.finished_at - 0.2
            else:  # the next tick waited for it, then started
                assert nxt.scheduled_at < prev.finished_at
    assert _schedule(db_url, "skip").skipped >= 1


def test_schedule_commands_and_a_schedule_declared_in_code(
    db_url: str, dp_cli: Any, dp_spawn: Any
) -> None:
    worker = _worker(dp_spawn, CODE)
    run = wait_until(
        lambda: next((v for v in _runs(db_url, "declared") if v.status == "completed"), None),
        timeout=30,
        what="a completed run of the schedule declared in code",
    )
    assert run.output == 7
    view = _schedule(db_url, "declared")
    assert (view.source, view.description, view.overlap) == ("code", "every 1s", "allow")
    shown = dp_cli("show", run.run_id, check=True).stdout
    assert "schedule: declared, tick" in shown
    doc = json.loads(dp_cli("show", run.run_id, "--json", check=True).stdout)
    assert doc["schedule"] == "declared" and doc["scheduled_at"]
    assert dp_cli("schedule", "pause", "declared", check=True).stdout.startswith(
        "paused schedule declared"
    )
    table = dp_cli("schedule", "list", check=True).stdout
    assert "declared" in table and "every 1s" in table and "paused" in table
    assert "overlap allow, catch-up none" in table
    triggered = dp_cli("schedule", "trigger", "declared", check=True).stdout.strip()
    assert triggered.startswith("declared:")
    wait_until(
        lambda: client_call(db_url, lambda c: c.get(triggered)).status == "completed",
        timeout=30,
        what="the triggered run",
    )
    out = dp_cli("schedule", "resume", "declared", check=True).stdout
    assert out.startswith("resumed schedule declared; next at")
    _stop([worker])
    out = dp_cli("schedule", "delete", "declared", check=True).stdout
    assert out.startswith("deleted schedule declared (declared in code")
    assert client_call(db_url, lambda c: c.list_schedules()) == []


def test_bad_schedule_commands_say_what_is_wrong_and_change_nothing(
    db_url: str, dp_cli: Any
) -> None:
    target = f"{MOD}:tick"
    _add(db_url, "taken", target, dp.Every("1h"))
    before = client_call(db_url, lambda c: c.list_schedules())
    cases = [
        (["add", "taken", target, "--every", "5m"], "a schedule named 'taken' exists"),
        (["add", "s", f"{MOD}:nope", "--every", "5m"], "has no pipeline 'nope'"),
        (["add", "s", target, "--cron", "0 3 * * mon-xyz"], "the day-of-week field 'mon-xyz'"),
        (["add", "s", target, "--cron", "0 3 * * *", "--tz", "Europe/Nowhere"], "time zone"),
        (["add", "s", target, "--every", "15 minutes"], "interval '15 minutes' does not parse"),
        (["trigger", "ghost"], "no schedule named 'ghost'; `durapipe schedule list` shows them"),
    ]
    with ThreadPoolExecutor(3) as pool:  # a CLI call is mostly imports: run them side by side
        procs = list(pool.map(lambda case: dp_cli("schedule", *case[0]), cases))
    for (args, said), proc in zip(cases, procs, strict=True):
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines
    assert client_call(db_url, lambda c: c.list_schedules()) == before
