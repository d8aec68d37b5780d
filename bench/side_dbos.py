"""The DBOS side of bench/run.py: one measurement per process, result as a RESULT line.

    python bench/side_dbos.py WORKLOAD --url URL [options]

SQLite files are prepared with `--journal wal` (default; the same journal mode as durapipe) or
`--journal delete` (DBOS's own default, a rollback journal); DBOS leaves `synchronous` at SQLite's
default, FULL, in both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dbos_app as app  # noqa: E402
from benchlib import RssSampler, bounded, deadline, emit, rss_mib, wake_stats  # noqa: E402
from dbos import DBOS, SetWorkflowID  # noqa: E402

HERE = Path(__file__).resolve().parent


def sqlite_path(url: str) -> str | None:
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else None


def prepare(url: str, journal: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as c:  # journal_mode is persistent in the file
            c.execute(f"PRAGMA journal_mode={journal}")


def launch(url: str, executor_id: str | None = None, journal: str = "wal") -> None:
    prepare(url, journal)
    if os.environ.get("BENCH_BUILD_NO_SYNC") == "1":  # building a history only, not measured
        import sqlalchemy as sa

        @sa.event.listens_for(sa.engine.Engine, "connect")
        def _nosync(dbapi_conn: Any, _rec: Any) -> None:
            if isinstance(dbapi_conn, sqlite3.Connection):
                dbapi_conn.execute("PRAGMA synchronous=OFF")

    cfg: dict[str, Any] = {
        "name": "durapipe-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    if executor_id:
        cfg["executor_id"] = executor_id
    DBOS(config=cfg)  # type: ignore[arg-type]
    DBOS.launch()


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read DBOS's system tables directly (schema `dbos` on PostgreSQL)."""
    path = sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path, timeout=30) as c:
            return c.execute(sql.replace("dbos.", ""), params).fetchall()
    import psycopg

    with psycopg.connect(url) as c:
        return c.execute(sql.replace("?", "%s"), params).fetchall()


# ------------------------------------------------------------------ workloads


async def steps(a: argparse.Namespace) -> dict[str, Any]:
    launch(a.url, journal=a.journal)
    t0 = time.perf_counter()
    h = await DBOS.start_workflow_async(app.many, a.n)
    await h.get_result()
    dt = time.perf_counter() - t0
    return {"us_per_step": dt / a.n * 1e6}


async def throughput(a: argparse.Namespace) -> dict[str, Any]:
    launch(a.url, journal=a.journal)
    if a.mode == "queue":
        q = await DBOS.register_queue_async("bench")
        t0 = time.time()
        handles = await bounded([q.enqueue_async(app.three) for _ in range(a.runs)])
    else:
        t0 = time.time()
        handles = await bounded([DBOS.start_workflow_async(app.three) for _ in range(a.runs)])
    results = await asyncio.gather(*(h.get_result() for h in handles))
    t1 = time.time()
    assert results == [6] * a.runs
    # the last completion as DBOS recorded it (a queue handle's get_result polls)
    (last_ms,) = query(a.url, "SELECT max(updated_at) FROM dbos.workflow_status")[0]
    end = min(t1, last_ms / 1000) if a.mode == "queue" else t1
    return {"runs_per_s": a.runs / (end - t0), "seconds": end - t0}


async def build(a: argparse.Namespace) -> dict[str, Any]:
    """Record n steps of a workflow, then die (os._exit in the workflow) leaving it PENDING."""
    os.environ["BENCH_CRASH_AT_END"] = "1"
    launch(a.url, executor_id="bench-build", journal=a.journal)
    with SetWorkflowID(a.wid):
        h = await DBOS.start_workflow_async(app.many, a.n)
    await h.get_result()
    raise AssertionError("the workflow should have ended the process")


async def resume(a: argparse.Namespace) -> dict[str, Any]:
    """Recover the PENDING workflow the way DBOS does (DBOS 3.x re-enqueues it on its internal
    queue; the queue thread dequeues and replays it): the same call as the admin API's recovery
    endpoint, for the executor id the crashed process had. A plain re-invocation with the same
    workflow id does not run it: DBOS then waits for the original execution."""
    launch(a.url, journal=a.journal)
    sql = "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = ?"
    assert query(a.url, sql, (a.wid,))[0][0] == "PENDING"
    t0 = time.time()
    DBOS._recover_pending_workflows(["bench-build"])
    end = deadline(600)
    while time.monotonic() < end:
        status = query(a.url, sql, (a.wid,))[0][0]
        if status in ("SUCCESS", "ERROR"):
            break
        await asyncio.sleep(0.02)
    t1 = time.time()
    assert status == "SUCCESS", status
    replay = app.TIMES["looped"] - app.TIMES["entered"]
    return {
        "seconds": t1 - t0,
        "replay_seconds": replay,
        "to_entry_seconds": app.TIMES["entered"] - t0,
    }


async def sleepers(a: argparse.Namespace) -> dict[str, Any]:
    launch(a.url, journal=a.journal)
    base = rss_mib()
    with RssSampler() as rss:
        t0 = time.time()
        if a.due_in is None:
            handles = await bounded(
                [DBOS.start_workflow_async(app.sleeper, a.sleep) for _ in range(a.runs)]
            )
        else:  # bench/wake.py: all due within --spread seconds, --due-in after the first start
            due = t0 + a.due_in
            handles = await bounded(
                [
                    DBOS.start_workflow_async(app.sleeper_until, due + a.spread * i / a.runs)
                    for i in range(a.runs)
                ]
            )
        started = time.time() - t0
        actual = await asyncio.wait_for(
            asyncio.gather(*(h.get_result() for h in handles)),
            timeout=(a.due_in or a.sleep) + 600,
        )
    ids = [h.get_workflow_id() for h in handles]
    rows = query(
        a.url,
        "SELECT workflow_uuid, started_at_epoch_ms, output FROM dbos.operation_outputs "
        "WHERE function_name = 'DBOS.sleep'",
    )
    slept = {wid: (ms / 1000, float(json.loads(out))) for wid, ms, out in rows}
    # A workflow that began after its wake time (DBOS's starts are slow) records no sleep:
    # counted apart, not measured.
    data = [
        (slept[w][0], slept[w][1], act) for w, act in zip(ids, actual, strict=True) if w in slept
    ]
    return {
        **wake_stats(data), "rss_peak_mib": rss.peak, "rss_base_mib": base, "start_s": started,
        "no_sleep_recorded": len(ids) - len(data),
    }  # fmt: skip


async def kill_child(a: argparse.Namespace) -> dict[str, Any]:
    launch(a.url, executor_id="bench-kill", journal=a.journal)
    if not a.recover:
        with SetWorkflowID(a.wid):
            h = await DBOS.start_workflow_async(app.ticker, a.n, a.pause)
        await h.get_result()
        return {}
    # Launch recovered this executor's PENDING workflows; wait for ours.
    h = await DBOS.retrieve_workflow_async(a.wid)
    return {"stamps": await h.get_result()}


def kill(a: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the process running a workflow, restart it at once (DBOS's self-hosted recovery:
    a process with the same executor id recovers its PENDING workflows at launch)."""
    prepare(a.url, a.journal)
    wid = f"kill-{uuid.uuid4().hex[:12]}"
    me = [sys.executable, __file__, "kill-child", "--url", a.url, "--wid", wid,
          "--n", str(a.n), "--pause", str(a.pause), "--journal", a.journal]  # fmt: skip
    first = subprocess.Popen(me, stdout=subprocess.DEVNULL)
    try:
        end = deadline(60)
        while time.monotonic() < end:
            try:
                done = query(
                    a.url,
                    "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = ?",
                    (wid,),
                )[0][0]
            except Exception:
                done = 0
            if done >= a.kill_after:
                break
            time.sleep(0.02)
        else:
            raise TimeoutError("the workflow did not get going")
        t_kill = time.time()
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = subprocess.run(
            [*me, "--recover"], capture_output=True, text=True, timeout=120, check=True
        )
    finally:
        if first.poll() is None:
            first.kill()
    stamps = next(
        json.loads(line[7:])["stamps"]
        for line in second.stdout.splitlines()
        if line.startswith("RESULT ")
    )
    after = [s for s in stamps if s > t_kill]
    return {"seconds": min(after) - t_kill, "steps_before": len(stamps) - len(after)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["steps", "throughput", "build", "resume", "sleepers", "kill", "kill-child"])  # fmt: skip
    ap.add_argument("--url", required=True)
    ap.add_argument("--journal", default="wal", choices=["wal", "delete"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--mode", default="direct", choices=["direct", "queue"])
    ap.add_argument("--wid", default=None)
    ap.add_argument("--sleep", type=float, default=10.0)
    ap.add_argument("--due-in", type=float, default=None)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--kill-after", type=int, default=20)
    ap.add_argument("--recover", action="store_true")
    a = ap.parse_args()
    if a.workload == "kill":
        emit(kill(a))
        return
    fn = {
        "steps": steps,
        "throughput": throughput,
        "build": build,
        "resume": resume,
        "sleepers": sleepers,
        "kill-child": kill_child,
    }[a.workload]
    try:
        emit(asyncio.run(fn(a)))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
