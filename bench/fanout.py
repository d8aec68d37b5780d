"""Fan-out: a parent pipeline that gathers N children, run by 2 `durapipe worker` processes.

    python bench/fanout.py --db sqlite --db postgresql --children 10000 [--dbos N] [--md FILE]
    python bench/fanout.py --db sqlite --children 500          # development size: ~1 minute

The parent is what a user writes to run N children in parallel and use their results
(bench/fanout_pipelines.py): ``await dp.gather(*(dp.run_subpipeline(fan_child, i=i) for i in
range(n)))``; each child runs one trivial step. Per database (a fresh SQLite file, WAL +
synchronous=FULL; or a fresh database on a durable PostgreSQL cluster, fsync=on,
synchronous_commit=on, from DURAPIPE_BENCH_PG_URL or tests/pgcluster.py):

1. total: `Client.start(fan_parent)` with 2 workers up, until the parent has ended; peak RSS
   (VmHWM) of each worker. The workers run with BENCH_FAIL_AT_END=1: the parent fails right
   after its gather (one write, as completing would be), so that
2. replay: a fresh process resumes the parent (`testing.resume_run`): every child's start and
   outcome is replayed from the history, and the run completes. Its time, and the process's RSS
   growth (VmHWM minus VmRSS before the resume) and tracemalloc peak (a second resume of the
   same history, rebuilt; tracemalloc slows it, so its time is not the one reported).
3. kill: a fresh database, 2 workers with `--lease-ttl 2`; once half the children have
   completed, SIGKILL the worker holding the parent. Time until the parent writes again (the
   other worker took it over and replayed it) and until it completes.

With --dbos N, DBOS's counterpart with N children (bench/dbos_fanout.py): a workflow enqueueing N child workflows
on a queue and awaiting their handles, run by 2 DBOS worker processes.
At 10,000 children on 2 cores: about 1-1.5 minutes per database, plus 75-110 s for DBOS with
--dbos 10000 (2026-11-30, load average 3-8); `--shape handles`: ~10 minutes (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import fanout_pipelines as FP  # noqa: E402
from benchlib import deadline, env_with_repo, log  # noqa: E402
from sqlalchemy import text  # noqa: E402

import durapipe as dp  # noqa: E402
from durapipe._store import open_store  # noqa: E402

PIPES = str(HERE / "fanout_pipelines.py")
SHAPES = {"gather": FP.fan_parent, "handles": FP.fan_parent_handles}
PARENT = {"shape": "gather"}  # --shape
CLI = [sys.executable, "-m", "durapipe"]


def status_kib(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def sql(store: Any, q: str, **params: Any) -> list[Any]:
    return await store.run_read(lambda conn: conn.execute(text(q), params).all())


class Workers:
    def __init__(self, url: str, n: int, *extra: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(
            "w", prefix="dp-fanout-", suffix=".log", delete=False
        )  # noqa: SIM115
        cmd = [*CLI, "worker", "-m", PIPES, "--database-url", url, *extra]
        e = {**env_with_repo(), **(env or {})}
        self.procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=e)
            for _ in range(n)
        ]

    async def ready(self, store: Any, timeout: float = 60) -> None:
        pids = {p.pid for p in self.procs}
        end = deadline(timeout)
        while time.monotonic() < end:
            rows = await sql(store, "SELECT pid FROM durapipe_workers WHERE stopped_at IS NULL")
            if pids <= {int(r[0]) for r in rows}:
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker exited ({p.returncode}); see {self.log.name}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"workers did not register; see {self.log.name}")

    def hwm_mib(self) -> list[float]:
        out = []
        for p in self.procs:
            with contextlib.suppress(OSError):
                if p.poll() is None:
                    out.append(status_kib(p.pid, "VmHWM") / 1024)
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


async def wait_ended(store: Any, run_id: str, timeout: float, poll: float = 0.05) -> Any:
    end = deadline(timeout)
    while time.monotonic() < end:
        row = await store.get_run(run_id)
        if row.status in ("completed", "failed", "cancelled", "aborted"):
            return row
        await asyncio.sleep(poll)
    raise TimeoutError(f"run {run_id} did not end within {timeout}s")


async def count_events(store: Any, run_id: str, kind: str) -> int:
    ((n,),) = await sql(
        store,
        "SELECT count(*) FROM durapipe_events WHERE run_id = :r AND kind = :k",
        r=run_id,
        k=kind,
    )
    return int(n)


# ------------------------------------------------------------------ the three measurements


async def total(url: str, n: int, timeout: float) -> dict[str, Any]:
    store = await open_store(url, migrate=True)
    workers = Workers(url, 2, env={"BENCH_FAIL_AT_END": "1"})
    try:
        await workers.ready(store)
        t0 = time.time()
        rid = await dp.Client(store).start(SHAPES[PARENT["shape"]], n=n)
        row = await wait_ended(store, rid, timeout, poll=0.2)
        hwm = workers.hwm_mib()
        assert row.status == "failed", (row.status, row.error)
        assert await count_events(store, rid, "child_completed") == n
        ((events,),) = await sql(
            store, "SELECT count(*) FROM durapipe_events WHERE run_id = :r", r=rid
        )
    finally:
        workers.stop()
        await store.close()
    return {"run_id": rid, "seconds": float(row.finished_at) - t0, "worker_hwm_mib": hwm,
            "parent_events": int(events)}  # fmt: skip


def replay_in_child(url: str, run_id: str, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "replay", "--url", url, "--run-id", run_id]
    cmd += ["--shape", PARENT["shape"]]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env_with_repo(), timeout=1800)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"replay failed: {out.stderr[-3000:]}")
    return dict(json.loads(line[-1][len("RESULT ") :]))


async def replay(url: str, run_id: str, trace: bool) -> dict[str, Any]:
    """(In a process of its own.) Resume the failed parent: it replays the fan-out, completes."""
    from durapipe.testing import resume_run

    os.environ.pop("BENCH_FAIL_AT_END", None)
    store = await open_store(url, migrate=False)
    try:
        before = status_kib("self", "VmRSS") / 1024
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        view = await resume_run(store, SHAPES[PARENT["shape"]], run_id)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
        assert view.status == "completed", view.error
    finally:
        await store.close()
    return {"seconds": dt, "rss_before_mib": before, "hwm_mib": status_kib("self", "VmHWM") / 1024,
            "tracemalloc_peak_mib": peak}  # fmt: skip


async def reset_failed(url: str, run_id: str) -> None:
    """Make the completed parent resumable again for a second replay: drop what the first
    resume added after the failure (bench-only surgery on a throwaway database)."""
    q1 = "DELETE FROM durapipe_events WHERE run_id = {r} AND seq > (SELECT min(seq) FROM durapipe_events WHERE run_id = {r} AND kind = 'run_failed')"
    q2 = "UPDATE durapipe_runs SET status = 'failed', output = NULL WHERE id = {r}"
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as c:
            c.execute(q1.format(r="?"), (run_id, run_id))
            c.execute(q2.format(r="?"), (run_id,))
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(q1.format(r="$1"), run_id)
        await conn.execute(q2.format(r="$1"), run_id)
    finally:
        await conn.close()


async def kill(url: str, n: int, timeout: float) -> dict[str, Any]:
    store = await open_store(url, migrate=True)
    workers = Workers(url, 2, "--lease-ttl", "2")
    try:
        await workers.ready(store)
        t0 = time.time()
        rid = await dp.Client(store).start(SHAPES[PARENT["shape"]], n=n)
        end = deadline(timeout)
        while await count_events(store, rid, "child_completed") < n // 2:
            if time.monotonic() > end:
                raise TimeoutError("the fan-out did not get half way")
            await asyncio.sleep(0.05)
        row = await store.get_run(rid)
        owner = await store.get_worker(row.lease_owner)
        victim = int(owner.pid)
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        done_at_kill = await count_events(store, rid, "child_completed")
        t_resumed = None
        while True:
            if t_resumed is None:
                got = await store.get_run(rid)
                if got.lease_owner is not None and got.lease_owner != row.lease_owner:
                    t_resumed = time.time()
            got = await store.get_run(rid)
            if got.status in ("completed", "failed", "cancelled", "aborted"):
                break
            if time.monotonic() > end:
                raise TimeoutError("the parent did not complete after the kill")
            await asyncio.sleep(0.05)
        assert got.status == "completed", (got.status, got.error)
        # the first parent event after the kill that the surviving worker wrote
        ((first_after,),) = await sql(
            store,
            "SELECT min(at) FROM durapipe_events WHERE run_id = :r AND at > :t",
            r=rid,
            t=t_kill,
        )
    finally:
        workers.stop()
        await store.close()
    return {"taken_over_s": (t_resumed or float("nan")) - t_kill,
            "first_event_after_s": float(first_after) - t_kill if first_after else None,
            "completed_after_s": float(got.finished_at) - t_kill,
            "children_done_at_kill": done_at_kill, "total_s": float(got.finished_at) - t0}  # fmt: skip


# ------------------------------------------------------------------ driver


def fresh_url(db: str, server: str | None, name: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='dp-fanout-')}/bench.db"
    import asyncpg

    async def mk() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(mk())
    assert server is not None
    return server.rsplit("/", 1)[0] + "/" + name


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def measure(db: str, server: str | None, n: int, timeout: float, dbos: int) -> dict[str, Any]:
    res: dict[str, Any] = {
        "db": db,
        "children": n,
        "shape": PARENT["shape"],
        "load_start": loadavg(),
    }
    url = fresh_url(db, server, "fanout_total")
    log(f"[{db}] total, {n} children")
    res["total"] = asyncio.run(total(url, n, timeout))
    log(f"[{db}] {res['total']}")
    res["replay"] = replay_in_child(url, res["total"]["run_id"], trace=False)
    asyncio.run(reset_failed(url, res["total"]["run_id"]))
    res["replay_traced"] = replay_in_child(url, res["total"]["run_id"], trace=True)
    log(f"[{db}] replay {res['replay']} traced {res['replay_traced']}")
    url = fresh_url(db, server, "fanout_kill")
    res["kill"] = asyncio.run(kill(url, n, timeout))
    log(f"[{db}] kill {res['kill']}")
    if dbos:
        url = fresh_url(db, server, "fanout_dbos")
        out = subprocess.run(
            [sys.executable, str(HERE / "dbos_fanout.py"), "drive", "--url", url, "--children", str(dbos)],
            capture_output=True, text=True, timeout=timeout + 120,
        )  # fmt: skip
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        res["dbos"] = json.loads(line[-1][7:]) if line else {"error": out.stderr[-2000:]}
        log(f"[{db}] dbos {res['dbos']}")
    res["load_end"] = loadavg()
    return res


def markdown(results: list[dict[str, Any]], command: str = "") -> str:
    out = ["## Fan-out: a parent gathering N children on 2 workers (issue #21, item 4)", ""]
    shape = results[0].get("shape", "gather") if results else "gather"
    if command:
        out += [f"Command: `{command}`", ""]
    out += [
        (
            "The parent: `await dp.gather(*(dp.run_subpipeline(fan_child, i=i) for i in range(n)))`; "
            if shape == "gather"
            else "The parent: `hs = [await dp.start_subpipeline(fan_child, i=i) for i in range(n)]`, "
            "then `await h.result()` for each in order; "
        )
        + "each child one trivial step. 2 `durapipe worker` processes (default concurrency 100). "
        "SQLite: WAL, synchronous=FULL; PostgreSQL: throwaway cluster, fsync=on, synchronous_commit=on.",
        "",
        "| database | children | total | worker peak RSS (VmHWM) | parent replay | replay RSS growth / tracemalloc peak | SIGKILL of the parent's worker → taken over / completed | DBOS total | DBOS worker peak RSS | load avg start → end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, rp, rt, k = r["total"], r["replay"], r["replay_traced"], r["kill"]
        d = r.get("dbos")
        dbos_t = (
            f"{d['seconds']:.1f} s ({d['children']:,} children)"
            if d and "seconds" in d
            else ("—" if not d else "failed")
        )
        dbos_m = (
            " / ".join(f"{x:.0f}" for x in d.get("worker_hwm_mib", [])) + " MiB"
            if d and "seconds" in d
            else "—"
        )
        out.append(
            f"| {r['db']} | {r['children']:,} | {t['seconds']:.1f} s ({r['children'] / t['seconds']:.0f} children/s) "
            f"| {' / '.join(f'{x:.0f}' for x in t['worker_hwm_mib'])} MiB "
            f"| {rp['seconds'] * 1000:,.0f} ms ({t['parent_events']:,} events) "
            f"| {rp['hwm_mib'] - rp['rss_before_mib']:.0f} MiB / {rt['tracemalloc_peak_mib']:.0f} MiB "
            f"| {k['taken_over_s']:.1f} s / {k['completed_after_s']:.1f} s ({k['children_done_at_kill']:,} done at the kill; run total {k['total_s']:.1f} s) "
            f"| {dbos_t} | {dbos_m} | {r['load_start']} → {r['load_end']} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", nargs="?", default="bench", choices=["bench", "replay"])
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--children", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--dbos", type=int, default=0, metavar="N", help="DBOS too, with N children")
    ap.add_argument("--md", default=None, help="write the markdown section to this file")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    ap.add_argument("--url", default=None)
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--trace", action="store_true")
    ap.add_argument(
        "--shape",
        default="gather",
        choices=sorted(SHAPES),
        help="gather: dp.gather of dp.run_subpipeline; handles: dp.start_subpipeline, then h.result()",
    )
    a = ap.parse_args()
    PARENT["shape"] = a.shape
    if a.mode == "replay":
        print("RESULT " + json.dumps(asyncio.run(replay(a.url, a.run_id, a.trace))), flush=True)
        return
    results, cluster = [], None
    try:
        for db in a.db or ["sqlite", "postgresql"]:
            server = None
            if db == "postgresql":
                server = os.environ.get("DURAPIPE_BENCH_PG_URL")
                if not server:
                    from pgcluster import PgCluster

                    cluster = PgCluster(durable=True)
                    cluster.start()
                    server = cluster.url
            results.append(measure(db, server, a.children, a.timeout, a.dbos))
    finally:
        if cluster is not None:
            cluster.stop()
    md = markdown(results, "python bench/fanout.py " + " ".join(sys.argv[1:]))
    print(md)
    if a.md:
        Path(a.md).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
