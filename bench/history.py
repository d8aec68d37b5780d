"""A year of history (issue #21): the same operations on an empty database and on one holding a
year of finished runs, in one sitting; then `durapipe gc` of most of that year while a worker
takes steps, and how long its step commits waited.

    python bench/history.py [--db sqlite] [--db postgresql] [--runs 1000000] [--events-per-run 10]
                            [--logs-per-run 3] [--md FILE] [--skip-gc] [--dbos-runs N]

1. Two databases per kind: "empty" (100 runs of the same shape, so a page has rows) and
   "loaded": ``--runs`` finished runs spread over 365 days (created/finished), each with
   ``--events-per-run`` events and ``--logs-per-run`` log lines, tags env=prod|dev on every run
   and team=blue on 1 in 1,000, five pipelines, statuses mostly completed. Bulk-loaded with plain
   SQL (bench/bulk.py: COPY on PostgreSQL, executemany with synchronous=OFF on SQLite); the
   load's time is reported.
2. On both, back to back with the same settings, a `durapipe worker` idle on each: µs per
   trivial step (bench/core.py's 1,000-step run, in-process), Client.start -> first step with an
   idle worker (bench/latency.py's way), claim throughput (1,000 runs x 3 steps through one
   worker), `list` (first page; --status, --pipeline, --tag filters), `show` and `logs` of one
   run, `result --wait` of a run that completes: each as the CLI's subprocess wall time and as
   the Client call in-process (the CLI's import time is the same on both). Ratio loaded/empty.
3. EXPLAIN (ANALYZE on PostgreSQL, QUERY PLAN on SQLite) of the statements a claim and the list
   queries run on the loaded database, captured as the store sends them; a sequential scan of a
   big table is flagged.
4. gc: `durapipe gc --older-than 30d` on the loaded database (~92% of the runs) while the worker
   runs a pipeline taking trivial steps back to back; every step's start time is its recorded
   result, so the gap between two steps is one step's commit and the next step's start: the
   longest and p99 gap during gc vs before it, gc's total time and runs/s.
5. With ``--dbos-runs N`` (PostgreSQL): DBOS's counterpart on N workflows (bench/history_dbos.py).

PostgreSQL: DURAPIPE_BENCH_PG_URL, or a throwaway durable cluster (fsync on, synchronous_commit
on; tests/pgcluster.py). SQLite: WAL, synchronous=FULL (durapipe's default). Develop with
``--runs 20000`` (about a minute); 1,000,000 runs take about 10 minutes per database to load,
measure and gc, and ~3 GiB of disk for PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bulk  # noqa: E402
import core  # noqa: E402
import dp_pipelines as P  # noqa: E402
import latency  # noqa: E402
from benchlib import gap_stats  # noqa: E402
from side_durapipe import Workers, start_many  # noqa: E402

import durapipe as dp  # noqa: E402
from durapipe._client import AdminClient  # noqa: E402
from durapipe._store import create_database, drop_database, open_store  # noqa: E402

DAY = 86400.0
EMPTY_RUNS = 100
PIPELINES = ["deploy", "build", "nightly", "backfill", "report"]
STATUSES = ["completed"] * 93 + ["failed"] * 4 + ["cancelled"] * 2 + ["timed_out"]
CLI = [sys.executable, "-m", "durapipe"]


# ------------------------------------------------------------------ the year


def run_id(i: int) -> str:
    return f"run_h{i:019d}"


def year(n: int, n_events: int, n_logs: int, end: float) -> list[bulk.Table]:
    """``n`` finished runs created evenly over the 365 days before ``end``, with what they own."""
    span = 365 * DAY

    def created(i: int) -> float:
        return end - span + span * (i + 0.5) / n

    def runs() -> Iterator[tuple[Any, ...]]:
        rnd = random.Random(7)
        for i in range(n):
            rid, at = run_id(i), created(i)
            pipeline = PIPELINES[rnd.randrange(len(PIPELINES))]
            status = STATUSES[rnd.randrange(len(STATUSES))]
            out = '{"ok": true}' if status == "completed" else None
            yield (rid, pipeline, "1", "bench.py:" + pipeline, False, status, '{"n": 1}', out,
                   rid, 0, pipeline, at, at + 60, at + 60, 1)  # fmt: skip

    def events() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            rid, at = run_id(i), created(i)
            yield (rid, 1, "run_started", None, "p", None, at, 1, '{"inputs": {"n": 1}}')
            for s in range(1, n_events - 1):
                yield (rid, s + 1, "step_completed", str(s), "work", f"work_{s}", at + s, 1,
                       f'{{"result": {{"i": {s}}}}}')  # fmt: skip
            if n_events > 1:
                yield (rid, n_events, "run_completed", None, None, None, at + 60, 1, "1")

    def logs() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            rid, at = run_id(i), created(i)
            for k in range(n_logs):
                yield (rid, rid, str(k + 1), "p", "out", at + k, f"line {k} of {rid}", 1)

    def tags() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            yield (run_id(i), "env", "prod" if i % 2 else "dev")
            if i % 1000 == 0:
                yield (run_id(i), "team", "blue")

    return [
        ("durapipe_runs", bulk.RUN_COLS, runs()),
        ("durapipe_events", bulk.EVENT_COLS, events()),
        ("durapipe_logs", bulk.LOG_COLS, logs()),
        ("durapipe_tags", bulk.TAG_COLS, tags()),
    ]


# ------------------------------------------------------------------ measuring


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def timed(fn: Callable[[], Awaitable[Any]], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def cli_env(url: str) -> dict[str, str]:
    env = {**os.environ, "DURAPIPE_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    # A warm machine has the .pyc files (as cli_startup.py): with PYTHONDONTWRITEBYTECODE set,
    # as in this sandbox, every CLI call compiled the checkout again (1.8 s a call, not 0.4).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cli_times(url: str, args: list[str], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.run([*CLI, *args], env=cli_env(url), capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"durapipe {' '.join(args)}: {p.stderr}")
    return out


async def per_step(url: str) -> list[float]:
    """µs per step of a 1,000-step run (between its first and last step's completion)."""
    return [step for step, _whole in await core.per_step(url, 1000, 1)]


async def first_step(url: str, work: str, runs: int) -> list[float]:
    return await latency.measure(url, runs, work)


async def claim_throughput(url: str, n: int) -> float:
    """n runs of 3 trivial steps started at once; an idle worker takes them: runs/s."""
    async with await dp.Client.connect(url) as client:
        t0 = time.time()
        ids = await start_many(client, P.three, n)
        store = client.store
        while True:
            rows = await store.get_runs(ids)
            if all(r.status == "completed" for r in rows):
                break
            bad = [r.status for r in rows if r.status in ("failed", "blocked", "aborted")]
            if bad:
                raise RuntimeError(f"runs ended badly: {bad[:3]}")
            await asyncio.sleep(0.05)
        end = max(r.finished_at for r in rows)
    return n / (end - t0)


LIST_CASES = [
    ("list, first page", []),
    ("list --status failed", ["--status", "failed"]),
    ("list --pipeline nightly", ["--pipeline", "nightly"]),
    ("list --tag team=blue (1 in 1,000)", ["--tag", "team=blue"]),
    ("list --tag env=prod (1 in 2)", ["--tag", "env=prod"]),
]


def list_kwargs(args: list[str]) -> dict[str, Any]:
    kw: dict[str, Any] = {"status": None, "pipeline": None, "tags": None}
    if args:
        key, val = args[0].lstrip("-"), args[1]
        kw[key if key != "tag" else "tags"] = dict([val.split("=", 1)]) if key == "tag" else val
    return kw


async def client_list(client: AdminClient, kw: dict[str, Any]) -> None:
    """What `durapipe list` asks the client: the page, the counts by status, the timelines."""
    await client.overview(roots_only=False, limit=50, **kw)


async def client_ops(url: str, probe: str, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with await AdminClient.open(url) as client:
        for name, args in LIST_CASES:
            kw = list_kwargs(args)
            out[name] = await timed(lambda kw=kw: client_list(client, kw), reps)
            out[name + " (page only)"] = await timed(
                lambda kw=kw: client.list(limit=50, **kw), reps
            )

        async def show() -> None:
            await client.get(probe)
            await client.events(probe)

        out["show RUN"] = await timed(show, reps)
        out["logs RUN"] = await timed(lambda: client.read_logs(probe, after_id=0), reps)
    return out


def cli_ops(url: str, probe: str, reps: int) -> dict[str, list[float]]:
    out = {name: cli_times(url, ["list", *args], reps) for name, args in LIST_CASES}
    out["show RUN"] = cli_times(url, ["show", probe], reps)
    out["logs RUN"] = cli_times(url, ["logs", probe], reps)
    return out


async def result_wait(url: str, work: str, reps: int) -> tuple[list[float], list[float]]:
    """Client.start of a one-step run, then Client.result (in-process) or `result --wait`."""
    from durapipe._definition import load_target

    ping = load_target(f"{work}/ping.py:ping")
    inproc, cli = [], []
    async with await dp.Client.connect(url) as client:
        for _ in range(reps):
            t0 = time.perf_counter()
            await client.result(await client.start(ping), timeout=30)
            inproc.append(time.perf_counter() - t0)
            rid = await client.start(ping)
            cli += await asyncio.to_thread(cli_times, url, ["result", rid, "--wait"], 1)
    return inproc, cli


# ------------------------------------------------------------------ query plans

BIG = ("durapipe_runs", "durapipe_events", "durapipe_logs", "durapipe_tags")


class Captured:
    """The statements the store sends while ``on``, with their parameters (SQLAlchemy's hook)."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.on = False
        self.stmts: list[tuple[str, Any]] = []
        event.listen(Engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
        head = stmt.lstrip().split(None, 1)[0].upper() if stmt.strip() else ""
        if self.on and not many and head in ("SELECT", "UPDATE", "WITH"):
            self.stmts.append((stmt, params))


CAPTURE: Captured | None = None


async def plans(url: str) -> list[tuple[str, str, str, bool]]:
    """-> (what, statement, plan, sequential scan of a big table?) for the claim and lists."""
    global CAPTURE
    from durapipe._store.claims import ClaimFilter

    CAPTURE = CAPTURE or Captured()
    cases: list[tuple[str, Callable[[AdminClient], Awaitable[Any]]]] = [
        ("claim", lambda c: c.store.claim(
            owner="bench-explain", limit=8, ttl=30, now=time.time(),
            flt=ClaimFilter(pipelines={"bench_three": "1", "ping": "1"}))),
    ]  # fmt: skip
    for name, args in LIST_CASES:
        kw = list_kwargs(args)
        cases.append((name, lambda c, kw=kw: c.overview(roots_only=False, limit=50, **kw)))
    found: list[tuple[str, str, Any]] = []
    async with await AdminClient.open(url) as client:
        for name, fn in cases:
            CAPTURE.stmts.clear()
            CAPTURE.on = True
            try:
                await fn(client)
            finally:
                CAPTURE.on = False
            found += [(name, s, p) for s, p in CAPTURE.stmts]
    out = []
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            for name, stmt, params in found:
                tx = conn.transaction()
                await tx.start()
                try:
                    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + stmt, *(params or ()))
                finally:
                    await tx.rollback()  # the claim's UPDATE is executed by ANALYZE
                plan = "\n".join(r[0] for r in rows)
                seq = any(f"Seq Scan on {t}" in plan for t in BIG)
                out.append((name, stmt, plan, seq))
        finally:
            await conn.close()
    else:
        import sqlite3

        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for name, stmt, params in found:
                rows = db.execute("EXPLAIN QUERY PLAN " + stmt, params or ()).fetchall()
                plan = "\n".join(r[-1] for r in rows)
                seq = any(
                    line.strip().startswith(f"SCAN {t}")
                    and "INDEX" not in line  # a scan along an index is not a table scan
                    for line in plan.splitlines()
                    for t in BIG
                )
                out.append((name, stmt, plan, seq))
        finally:
            db.close()
    return out


# ------------------------------------------------------------------ gc while a worker works


async def gc_under_load(url: str, older_than: str) -> dict[str, Any]:
    """gc (the CLI, a subprocess) while the worker runs ``bench_ticker``: its steps' gaps."""
    async with await dp.Client.connect(url) as client:
        before = sum((await client.store.count_by_status()).values())
        rid = await client.start(P.ticker, n=10_000_000, pause=0.0)
        while len(await client.events(rid)) < 200:  # noqa: ASYNC110 - the worker steps
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # a baseline
        g0 = time.time()
        p = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "gc", "--older-than", older_than],
            env=cli_env(url),
            capture_output=True,
            text=True,
        )
        g1 = time.time()
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        await asyncio.sleep(2)
        await client.cancel(rid, here=False)
        began = [
            e["data"]["result"]
            for e in await client.events(rid)
            if e["kind"] == "step_completed" and e.get("data")
        ]
        after = sum((await client.store.count_by_status()).values())
    return {
        "deleted": int(p.stdout.split()[1]),
        "runs_before": before,
        "runs_after": after,
        "gc_s": g1 - g0,
        **gap_stats(began, g0, g1),
    }


def dbos_gc(server: str | None, runs: int, steps: int) -> dict[str, Any]:
    """bench/history_dbos.py on a database of its own in the same cluster."""
    url, drop = asyncio.run(new_url("postgresql", server, "", "dbos"))
    try:
        p = subprocess.run(
            [sys.executable, str(HERE / "history_dbos.py"), "--url", url, "--runs", str(runs),
             "--steps", str(steps)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return dict(json.loads(p.stdout.strip().splitlines()[-1].removeprefix("RESULT ")))
    finally:
        asyncio.run(drop_database(*drop))


# ------------------------------------------------------------------ one database kind


async def new_url(db: str, server: str | None, tmp: str, name: str) -> tuple[str, Any]:
    if db == "sqlite":
        return f"sqlite:///{tmp}/{name}.db", None
    assert server is not None
    dbname = f"dp_hist_{name}_{uuid.uuid4().hex[:6]}"
    await create_database(server, dbname)
    return server.rsplit("/", 1)[0] + "/" + dbname, (server, dbname)


def measure(db: str, server: str | None, a: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="dp-history-")
    work = tmp
    Path(work, "ping.py").write_text(latency.PIPE)
    res: dict[str, Any] = {"db": db, "runs": a.runs, "events": a.events_per_run}
    drops = []
    workers: list[Workers] = []
    try:
        urls = {}
        end = time.time() - 3600
        for kind, n in (("empty", EMPTY_RUNS), ("loaded", a.runs)):
            url, drop = asyncio.run(new_url(db, server, tmp, kind))
            drops += [drop] if drop else []
            asyncio.run(bulk.migrate(url))
            secs = asyncio.run(bulk.load(url, year(n, a.events_per_run, a.logs_per_run, end)))
            res[f"load_s_{kind}"] = secs
            urls[kind] = url
            print(f"  {kind}: {n:,} runs loaded in {secs:.1f}s", flush=True)
        if db == "sqlite":
            res["file_mib"] = os.path.getsize(urls["loaded"].removeprefix("sqlite:///")) / 2**20
            # The load left gigabytes in the page cache to write: the worker's first checkpoint
            # fsyncs the file and waited for all of it (a 2.3 s step gap before gc once).
            os.sync()
        probes = {"empty": run_id(EMPTY_RUNS // 2), "loaded": run_id(a.runs // 2)}
        for kind in ("empty", "loaded"):
            w = Workers(urls[kind], 1, "-m", f"{work}/ping.py")
            workers.append(w)

            async def ready(url: str = urls[kind], w: Workers = w) -> None:
                store = await open_store(url)
                try:
                    await w.ready(store)
                finally:
                    await store.close()

            asyncio.run(ready())
        time.sleep(1)
        if a.gc_only:
            res["gc"] = asyncio.run(gc_under_load(urls["loaded"], "30d"))
            print(f"  gc: {res['gc']}", flush=True)
            return res
        both: dict[str, dict[str, Any]] = {"empty": {}, "loaded": {}}
        for _ in range(3):  # interleaved: both see the same machine
            for kind in ("empty", "loaded"):
                both[kind].setdefault("step_us", []).extend(asyncio.run(per_step(urls[kind])))
        print("  per step done", flush=True)
        for kind in ("empty", "loaded"):
            both[kind]["first_step_s"] = asyncio.run(first_step(urls[kind], work, a.latency_runs))
        print("  first step done", flush=True)
        for kind in ("empty", "loaded"):
            both[kind]["claim_runs_s"] = asyncio.run(claim_throughput(urls[kind], a.claim_runs))
        print("  claims done", flush=True)
        for kind in ("empty", "loaded"):
            both[kind]["client"] = asyncio.run(client_ops(urls[kind], probes[kind], a.reps))
            both[kind]["cli"] = cli_ops(urls[kind], probes[kind], a.cli_reps)
            inproc, cli = asyncio.run(result_wait(urls[kind], work, a.cli_reps))
            both[kind]["client"]["result --wait"] = inproc
            both[kind]["cli"]["result --wait"] = cli
        print("  reads done", flush=True)
        res["both"] = both
        res["plans"] = asyncio.run(plans(urls["loaded"]))
        if not a.skip_gc:
            res["gc"] = asyncio.run(gc_under_load(urls["loaded"], "30d"))
            print(f"  gc: {res['gc']}", flush=True)
        if db == "postgresql" and a.dbos_runs:
            res["dbos_gc"] = dbos_gc(server, a.dbos_runs, a.events_per_run)
            print(f"  DBOS gc: {res['dbos_gc']}", flush=True)
    finally:
        for w in workers:
            w.stop()
        for drop in drops:
            asyncio.run(drop_database(*drop))
        if db == "sqlite":
            for f in Path(tmp).glob("*.db*"):
                f.unlink()
    return res


# ------------------------------------------------------------------ report


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "## A year of history (bench/history.py)",
        "",
        f"`{meta['command']}` — load average {meta['load_start']} at start, "
        f"{meta['load_end']} at end; {meta['when']}. SQLite: WAL, synchronous=FULL; "
        "PostgreSQL: a throwaway cluster with fsync=on, synchronous_commit=on. "
        f"Empty = {EMPTY_RUNS} runs of the same shape; loaded = the year. Medians; "
        "CLI = the subprocess's wall time (Python start and imports included, the same on both).",
        "",
    ]
    for r in results:
        if "both" not in r:  # --gc-only
            out += [f"gc only ({r['db']}, {r['runs']:,} runs): {r['gc']}", ""]
            continue
        db, both = r["db"], r["both"]
        e, lo = both["empty"], both["loaded"]
        out += [
            f"### {db}: {r['runs']:,} runs, {r['runs'] * r['events']:,} events",
            "",
            f"Bulk load of the year: {r['load_s_loaded']:.0f} s"
            + (f" (file {r['file_mib']:,.0f} MiB)" if "file_mib" in r else "")
            + ("" if db == "sqlite" else ", VACUUM ANALYZE included (as autovacuum leaves a year)")
            + ".",
            "",
            "| operation | empty | loaded | loaded/empty | target |",
            "|---|---:|---:|---:|---|",
        ]

        def row(
            name: str, ev: float, lv: float, fmt: Callable[[float], str], target: str,
            out: list[str] = out,
        ) -> None:  # fmt: skip
            out.append(f"| {name} | {fmt(ev)} | {fmt(lv)} | {lv / ev:.2f}× | {target} |")

        row("per trivial step (1,000-step run, in-process)", med(e["step_us"]),
            med(lo["step_us"]), lambda x: f"{x:.0f} µs", "≤ 1.2×")  # fmt: skip
        row("Client.start → first step, idle worker (p50)", med(e["first_step_s"]),
            med(lo["first_step_s"]), ms, "≤ 1.2×")  # fmt: skip
        row("claim throughput, 1,000 runs × 3 steps, one worker", e["claim_runs_s"],
            lo["claim_runs_s"], lambda x: f"{x:.0f} runs/s", "≥ 1/1.2")  # fmt: skip
        for name in [n for n, _ in LIST_CASES] + ["show RUN", "logs RUN", "result --wait"]:
            tgt = "≤ 1.2×" + ("; < 100 ms" if name == "list, first page" else "")
            row(f"`{name}`, Client in-process", med(e["client"][name]),
                med(lo["client"][name]), ms, tgt)  # fmt: skip
            page = name + " (page only)"
            if page in e["client"]:
                row(f"`{name}`, the page alone (Client.list)", med(e["client"][page]),
                    med(lo["client"][page]), ms, tgt)  # fmt: skip
            row(f"`{name}`, CLI subprocess", med(e["cli"][name]), med(lo["cli"][name]), ms, "")
        out.append("")
        if "gc" in r:
            g = r["gc"]
            out += [
                f"`durapipe gc --older-than 30d` while a worker takes trivial steps back to back: "
                f"deleted {g['deleted']:,} of {g['runs_before']:,} runs in {g['gc_s']:.1f} s "
                f"({g['deleted'] / g['gc_s']:,.0f} runs/s, with their events, logs and tags). "
                f"Gap between two steps (one step's commit + the next step's start), "
                f"{g['steps_during']:,} steps during gc: max {g['during_max_ms']:.1f} ms, "
                f"p99 {g['during_p99_ms']:.1f} ms, p50 {g['during_p50_ms']:.2f} ms; before gc: "
                f"max {g['base_max_ms']:.1f} ms, p99 {g['base_p99_ms']:.1f} ms, "
                f"p50 {g['base_p50_ms']:.2f} ms. Target: no step delayed more than 50 ms.",
                "",
            ]
        if "dbos_gc" in r:
            d = r["dbos_gc"]
            out += [
                f"DBOS side by side (PostgreSQL, {d['runs']:,} workflows of {d['steps']} steps "
                f"bulk-loaded into its tables in {d['load_s']:.0f} s; DBOS has no gc of its own "
                "— Conductor's retention is hosted — so `DBOS.list_workflows(completed_before=, "
                "limit=1000)` + `DBOS.delete_workflows(ids)` in a loop, while a workflow in the "
                f"same process takes steps): deleted {d['deleted']:,} in {d['gc_s']:.1f} s "
                f"({d['deleted'] / d['gc_s']:,.0f} workflows/s); gap between two steps during "
                f"it: max {d['during_max_ms']:.1f} ms, p99 {d['during_p99_ms']:.1f} ms "
                f"({d['steps_during']:,} steps); before: max {d['base_max_ms']:.1f} ms, "
                f"p99 {d['base_p99_ms']:.1f} ms.",
                "",
            ]
        seqs = [name for name, _, _, seq in r["plans"] if seq]
        out += [
            f"Query plans on the loaded database ({'sequential scans of big tables in: ' + ', '.join(sorted(set(seqs))) if seqs else 'no sequential scan of a big table'}):",
            "",
            "<details><summary>claim and list statements with their plans</summary>",
            "",
        ]
        for name, stmt, plan, seq in r["plans"]:
            out += [f"**{name}**{' — SEQUENTIAL SCAN' if seq else ''}", "", "```sql",
                    " ".join(stmt.split()), "```", "```", plan, "```", ""]  # fmt: skip
        out += ["</details>", ""]
    return "\n".join(out)


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--events-per-run", type=int, default=10)
    ap.add_argument("--logs-per-run", type=int, default=3)
    ap.add_argument("--claim-runs", type=int, default=1000)
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--reps", type=int, default=20, help="in-process repetitions of a read")
    ap.add_argument("--cli-reps", type=int, default=5, help="CLI repetitions of a read")
    ap.add_argument("--skip-gc", action="store_true")
    ap.add_argument("--gc-only", action="store_true", help="load, then only gc under load")
    ap.add_argument(
        "--dbos-runs", type=int, default=0, help="DBOS's delete side by side with this many"
    )
    ap.add_argument("--md", help="write the markdown section to this file")
    a = ap.parse_args()
    meta = {
        "command": "python bench/history.py " + " ".join(sys.argv[1:]),
        "load_start": loadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = []
    for db in a.db or ["sqlite", "postgresql"]:
        print(f"{db}:", flush=True)
        server, cluster = (None, None) if db == "sqlite" else core.pg_url()
        try:
            results.append(measure(db, server, a))
        finally:
            if cluster is not None:
                cluster.stop()
    meta["load_end"] = loadavg()
    md = markdown(results, meta)
    print(md)
    if a.md:
        Path(a.md).write_text(md + "\n")
    Path(tempfile.gettempdir(), "history-results.json").write_text(
        json.dumps({"meta": meta, "results": results}, default=str)
    )


if __name__ == "__main__":
    main()
