"""Fencing (issue #14) with real processes: a worker paused past its lease writes no more log lines
into the run another worker finished. Both databases."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

from conftest import (
    PIPELINES,
    client_call,
    side_effects,
    stop_between_transactions,
    wait_until,
)

FENCING = str(PIPELINES / "fencing.py")
COUNTING = str(PIPELINES / "counting.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _logs(db_url: str, run_id: str) -> list[Any]:
    return client_call(db_url, lambda c: c.store.read_logs(run_id, limit=100000))


def test_a_worker_woken_after_a_takeover_adds_no_lines_to_the_runs_logs(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    from durapipe._definition import load_target

    pdef = load_target(f"{FENCING}:chatty")
    rid = client_call(db_url, lambda c: c.start(pdef))
    a = dp_spawn("worker", "-m", FENCING, env=FAST)
    wait_until(
        lambda: any(x.line == "tick" for x in _logs(db_url, rid)),
        what="worker A's command to print",
    )
    stop_between_transactions(a, db_url)  # its command goes on printing into A's pipe
    # Read after the stop: a loaded machine may have let A's lease lapse and A take it again.
    stopped = client_call(db_url, lambda c: c.get(rid)).attempt
    try:
        b = dp_spawn("worker", "-m", FENCING, env=FAST)
        wait_until(
            lambda: any(x.attempt > stopped and x.line == "tick" for x in _logs(db_url, rid)),
            timeout=30,
            what="worker B to take over and print",
        )
        (tmp_path / "go").write_text("")
        wait_until(
            lambda: client_call(db_url, lambda c: c.get(rid)).status == "completed",
            timeout=30,
            what="B to complete the run",
        )
    finally:
        a.send_signal(signal.SIGCONT)
    # A wakes, reads what its command printed meanwhile, and is refused at its next write.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(a.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    wait_until(
        lambda: any("lease lost" in line for line in lines),
        timeout=20,
        what="A to notice it lost the lease",
    )
    a.send_signal(signal.SIGTERM)  # it stores what it still buffers before it exits
    assert a.wait(timeout=30) == 0
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=30) == 0
    logs = _logs(db_url, rid)
    takeover = next(i for i, x in enumerate(logs) if x.attempt > stopped)
    late = [(x.attempt, x.line) for x in logs[takeover:] if x.attempt <= stopped]
    assert not late, late
    assert "finished" in [x.line for x in logs if x.attempt > stopped]


_FULL = {  # the database refuses every new event, as a full disk would
    "sqlite": [
        "CREATE TRIGGER h14_full BEFORE INSERT ON durapipe_events "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION h14_full() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
        "'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$ "
        "LANGUAGE plpgsql",
        "CREATE TRIGGER h14_full BEFORE INSERT ON durapipe_events "
        "FOR EACH ROW EXECUTE FUNCTION h14_full()",
    ],
}
_ROOM = {"sqlite": ["DROP TRIGGER h14_full"], "postgresql": ["DROP FUNCTION h14_full CASCADE"]}


def _sql(db_url: str, statements: list[str]) -> None:
    from durapipe._store.url import resolve_url

    url = resolve_url(db_url)
    if url.dialect == "sqlite":
        assert url.path is not None
        with sqlite3.connect(url.path, isolation_level=None) as conn:
            for stmt in statements:
                conn.execute(stmt)
        return

    async def go() -> None:
        import asyncpg

        from durapipe._store import Store

        conn = await asyncpg.connect(Store(url).plain_pg_dsn())
        try:
            for stmt in statements:
                await conn.execute(stmt)
        finally:
            await conn.close()

    asyncio.run(go())


def test_a_run_whose_history_write_fails_is_released_and_resumed_at_once(
    db_url: str, dp_spawn: Any, dp_cli: Any, tmp_path: Path
) -> None:
    """`durapipe run` whose next history write the database refuses (disk full) says so — not
    "lease lost to another worker" — and exits without leaving the run leased by a process that
    is gone: `resume` takes it at once, though its lease was for 300 s."""
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    long = {"DURAPIPE_LEASE_TTL": "300"}
    p = dp_spawn("run", f"{COUNTING}:counting", "--input", "n=3", "--input", "block_at=1", env=long)
    rid = p.stdout.readline().strip()  # type: ignore[union-attr]
    wait_until(lambda: "block-1" in side_effects(tmp_path, "steps"), what="the blocking step")
    _sql(db_url, _FULL[kind])
    (tmp_path / "go").write_text("")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "lease lost" not in err, err
    assert "could not write its history (the database refused the write" in err, err
    assert "released when this process exits" in err, err
    assert f"run {rid} is pending: it was not finished here; `durapipe resume {rid}`" in err, err
    assert "left to the workers" not in err, err  # there may be none
    assert ("disk is full" if kind == "sqlite" else "No space left on device") in err, err
    row = client_call(db_url, lambda c: c.get(rid))
    assert row.lease_owner is None and row.status == "pending", row
    _sql(db_url, _ROOM[kind])
    r = dp_cli("resume", rid, env=long, timeout=60)
    assert r.returncode == 0, r.stderr
    assert client_call(db_url, lambda c: c.get(rid)).status == "completed"
    assert side_effects(tmp_path, "steps") == ["1", "block-1", "block-1", "2", "3"]


def test_cancel_of_a_suspended_run_with_a_worker_up_reports_the_cancel_it_caused(
    db_url: str, dp_spawn: Any, dp_cli: Any, tmp_path: Path
) -> None:
    """The worker may take the queued cancel before the CLI can: either way the run ends
    cancelled, its finally runs once, and `durapipe cancel` says so and exits 0 (it used to exit 1
    with "run X is cancelled; it cannot be taken now" or "held by worker ...")."""
    dp_spawn("worker", "-m", COUNTING, "--suspend-after", "0.1", env=FAST)
    ids = []
    for _ in range(3):
        r = dp_cli("start", f"{COUNTING}:guarded", "--input", "wait=input", check=True)
        ids.append(r.stdout.strip())
    wait_until(
        lambda: all(client_call(db_url, lambda c, i=i: c.get(i)).status == "waiting" for i in ids),
        what="the runs to suspend",
    )
    for rid in ids:
        r = dp_cli("cancel", rid)
        assert r.returncode == 0, r.stdout + r.stderr
        last = r.stdout.strip().splitlines()[-1]  # after the live output of a cancel run here
        assert last in (f"run {rid}: cancelled", f"run {rid}: cancel requested"), r
        wait_until(
            lambda rid=rid: client_call(db_url, lambda c: c.get(rid)).status == "cancelled",
            what="the run to end cancelled",
        )
    assert side_effects(tmp_path, "steps").count("cleanup") == 3
