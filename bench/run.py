"""durapipe vs DBOS on this machine: the same workloads on SQLite and PostgreSQL.

    python bench/run.py [--quick] [--db sqlite] [--db postgresql] [--only a,b,c,d,e]

Every measurement runs in a fresh process (bench/side_durapipe.py or bench/side_dbos.py);
durapipe and DBOS runs alternate. Prints the table and writes it to bench/results.md.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from benchlib import env_with_repo, log  # noqa: E402

SIDES = {"durapipe": HERE / "side_durapipe.py", "dbos": HERE / "side_dbos.py"}
# Settings a user's environment could change; the bench runs with the defaults.
CLEARED_ENV = ("DURAPIPE_DATABASE_URL", "DURAPIPE_LEASE_TTL", "DURAPIPE_POLL_INTERVAL",
               "DURAPIPE_SUSPEND_AFTER", "DBOS__VMID", "DBOS__APPVERSION", "PGOPTIONS")  # fmt: skip


@dataclass
class Plan:
    reps_a: int
    reps: int
    runs_b: int
    workers_b: list[int]
    resume_ns: list[int]
    sleepers: list[tuple[int, float]]  # (runs, sleep seconds)
    reps_e: int
    dbos_delete_journal: bool
    reps_c: int = 1


QUICK = Plan(reps_a=3, reps=1, runs_b=1000, workers_b=[2, 4], resume_ns=[1000, 2500, 5000],
             sleepers=[(1000, 15.0)], reps_e=1, dbos_delete_journal=False)  # fmt: skip
FULL = Plan(reps_a=5, reps=3, runs_b=1000, workers_b=[2, 4], resume_ns=[1000, 5000, 10000],
            sleepers=[(1000, 20.0), (10000, 240.0)], reps_e=3, dbos_delete_journal=True, reps_c=2)  # fmt: skip


@dataclass
class Row:
    section: str
    label: str
    unit: str
    dp_what: str = ""
    dbos_what: str = ""
    dp: list[float] = field(default_factory=list)
    dbos: list[float] = field(default_factory=list)
    dp_extra: list[str] = field(default_factory=list)
    dbos_extra: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (c): replay times; (d) RSS rows: RSS of the idle process
    replay: dict[str, list[float]] = field(default_factory=lambda: {"durapipe": [], "dbos": []})


# ---------------------------------------------------------------- databases


class Databases:
    """Fresh databases: SQLite files in a temp folder; PostgreSQL databases on one server."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_url: str | None = None
        self.cluster: Any = None
        self.count = 0

    def start_pg(self) -> str:
        url = os.environ.get("DURAPIPE_BENCH_PG_URL")
        if not url:
            from pgcluster import PgCluster

            self.cluster = PgCluster(durable=True)
            url = self.cluster.start()
        self.pg_url = url
        return url

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def new(self, kind: str, name: str) -> str:
        self.count += 1
        name = f"bench_{self.count}_{name}".replace("-", "_").lower()
        if kind == "sqlite":
            return f"sqlite:///{self.tmp / name}.db"
        assert self.pg_url is not None
        self.pg_exec(f'CREATE DATABASE "{name}"')
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def pg_exec(self, sql: str, url: str | None = None) -> Any:
        import asyncpg

        async def go() -> Any:
            conn = await asyncpg.connect(url or self.pg_url)
            try:
                return await conn.fetch(sql)
            finally:
                await conn.close()

        return asyncio.run(go())

    def set_sync_commit(self, url: str, on: bool) -> None:
        """Only for building long histories faster (never while measuring)."""
        if url.startswith("postgresql"):
            db = url.rsplit("/", 1)[1]
            sql = (f'ALTER DATABASE "{db}" RESET synchronous_commit' if on
                   else f'ALTER DATABASE "{db}" SET synchronous_commit = off')  # fmt: skip
            self.pg_exec(sql)


# ---------------------------------------------------------------- running one measurement


def measure(side: str, workload: str, *args: str, timeout: float = 900, env: dict[str, str] | None = None,
            expect_result: bool = True) -> dict[str, Any]:  # fmt: skip
    cmd = [sys.executable, str(SIDES[side]), workload, *args]
    e = env_with_repo()
    for k in CLEARED_ENV:
        e.pop(k, None)
    e["DURAPIPE_SQLITE_SYNCHRONOUS"] = "FULL"
    e.update(env or {})
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{side} {workload}: timed out after {timeout:.0f}s") from exc
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[7:])
            log(
                f"    {side:8} {workload:10} {' '.join(args[2:])[:60]:60} {time.monotonic() - t0:6.1f}s  {short(res)}"
            )
            return res
    if not expect_result and p.returncode == 0:  # DBOS's build ends its process in the workflow
        log(
            f"    {side:8} {workload:10} {' '.join(args[2:])[:60]:60} {time.monotonic() - t0:6.1f}s"
        )
        return {}
    tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"{side} {workload} failed (exit {p.returncode}):\n{tail}")


def short(res: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())


def alternate(rep: int) -> list[str]:
    return ["durapipe", "dbos"] if rep % 2 == 0 else ["dbos", "durapipe"]


def attempt(row: Row, side: str, *args: str, **kw: Any) -> dict[str, Any] | None:
    """measure(side, *args, **kw); a failure is logged and noted in the row, and skipped."""
    return guarded(row, side, lambda: measure(side, *args, **kw))


def guarded(row: Row, side: str, fn: Any) -> dict[str, Any] | None:
    try:
        res: dict[str, Any] = fn()
        return res
    except Exception as exc:  # keep going; the table says what failed
        log(f"    ERROR {exc}")
        row.errors.append(f"{side}: {str(exc).splitlines()[0]}")
        return None


def add(row: Row, side: str, value: float | None, extra: str | None = None) -> None:
    if value is None:
        return
    (row.dp if side == "durapipe" else row.dbos).append(value)
    if extra:
        (row.dp_extra if side == "durapipe" else row.dbos_extra).append(extra)


# ---------------------------------------------------------------- workloads


def workload_a(db: str, dbs: Databases, plan: Plan) -> list[Row]:
    row = Row("(a) per-step overhead", "1 run of 1,000 trivial async steps", "µs/step",
              "run_pipeline (in-process Runner)", "start_workflow_async")  # fmt: skip
    urls = {s: dbs.new(db, f"a_{s}") for s in SIDES}
    for rep in range(plan.reps_a):
        for side in alternate(rep):
            r = attempt(row, side, "steps", "--url", urls[side], "--n", "1000")
            add(row, side, r and r["us_per_step"])
    rows = [row]
    if db == "sqlite" and plan.dbos_delete_journal:
        alt = Row("(a) per-step overhead", "same, DBOS with its default rollback journal (journal_mode=DELETE)",
                  "µs/step", "(as above, WAL)", "start_workflow_async, DELETE journal")  # fmt: skip
        url = dbs.new(db, "a_dbos_delete")
        alt.dp = row.dp
        for _ in range(plan.reps_a):
            r = attempt(alt, "dbos", "steps", "--url", url, "--n", "1000", "--journal", "delete")  # fmt: skip
            add(alt, "dbos", r and r["us_per_step"])
        rows.append(alt)
    return rows


def workload_b(db: str, dbs: Databases, plan: Plan) -> list[Row]:
    n = str(plan.runs_b)
    direct = Row("(b) throughput", f"{plan.runs_b:,} runs × 3 trivial steps, one process", "runs/s",
                 "Client.start + in-process Runner", "start_workflow_async")  # fmt: skip
    queued = Row("(b) throughput", f"{plan.runs_b:,} runs × 3 steps, queued", "runs/s",
                 "Client.start + 1 `durapipe worker`", "Queue.enqueue_async, dequeued in-process")  # fmt: skip
    rows = [direct, queued]
    for rep in range(plan.reps):
        for side in alternate(rep):
            url = dbs.new(db, f"b_{side}_{rep}")
            if side == "durapipe":
                r = attempt(direct, side, "throughput", "--url", url, "--runs", n)
            else:
                r = attempt(direct, side, "throughput", "--url", url, "--runs", n, "--mode", "direct")  # fmt: skip
            add(direct, side, r and r["runs_per_s"])
        for side in alternate(rep + 1):
            url = dbs.new(db, f"bq_{side}_{rep}")
            if side == "durapipe":
                r = attempt(queued, side, "throughput", "--url", url, "--runs", n, "--workers", "1")  # fmt: skip
            else:
                r = attempt(queued, side, "throughput", "--url", url, "--runs", n, "--mode", "queue")  # fmt: skip
            add(queued, side, r and r["runs_per_s"])
    if db == "postgresql":
        for k in plan.workers_b:
            row = Row("(b) throughput", f"{plan.runs_b:,} runs × 3 steps, {k} worker processes", "runs/s",
                      f"Client.start + {k} × `durapipe worker`", "not measured")  # fmt: skip
            for rep in range(plan.reps):
                url = dbs.new(db, f"bw{k}_{rep}")
                r = attempt(row, "durapipe", "throughput", "--url", url, "--runs", n, "--workers", str(k))  # fmt: skip
                add(row, "durapipe", r and r["runs_per_s"])
            rows.append(row)
    return rows


def workload_c(db: str, dbs: Databases, plan: Plan) -> list[Row]:
    rows = []
    urls = {s: dbs.new(db, f"c_{s}") for s in SIDES}
    for n in plan.resume_ns:
        row = Row("(c) recovery", f"resume a run with {n:,} recorded steps", "ms",
                  "resume_run (as bench/core.py)", "_recover_pending_workflows")  # fmt: skip
        for rep in range(plan.reps_c):
            for side in alternate(rep):
                url = urls[side]
                ident = f"c{n}-{rep}-{time.time_ns()}"

                def one(
                    side: str = side, url: str = url, ident: str = ident, n: int = n
                ) -> dict[str, Any]:
                    dbs.set_sync_commit(url, False)
                    try:
                        if side == "durapipe":
                            b = measure(side, "build", "--url", url, "--n", str(n), env={"DURAPIPE_SQLITE_SYNCHRONOUS": "OFF"})  # fmt: skip
                            ident = b["run_id"]
                        else:
                            measure(side, "build", "--url", url, "--n", str(n), "--wid", ident, env={"BENCH_BUILD_NO_SYNC": "1"}, expect_result=False)  # fmt: skip
                    finally:
                        dbs.set_sync_commit(url, True)
                    flag = "--run-id" if side == "durapipe" else "--wid"
                    return measure(side, "resume", "--url", url, "--n", str(n), flag, ident)

                r = guarded(row, side, one)
                if r:
                    add(row, side, r["seconds"] * 1000)
                    row.replay[side].append(r["replay_seconds"] * 1000)
        rows.append(row)
    return rows


def workload_d(db: str, dbs: Databases, plan: Plan) -> list[Row]:
    rows = []
    for runs, sleep in plan.sleepers:
        what = f"{runs:,} runs sleeping {sleep:g}s"
        p50 = Row("(d) sleeping runs", f"{what}: wake-up delay p50", "ms",
                  "1 `durapipe worker --suspend-after 1`", "one process, start_workflow_async")  # fmt: skip
        p99 = Row(
            "(d) sleeping runs", f"{what}: wake-up delay p99", "ms", p50.dp_what, p50.dbos_what
        )
        rss = Row("(d) sleeping runs", f"{what}: peak RSS of the process holding them", "MiB",
                  p50.dp_what, p50.dbos_what)  # fmt: skip
        reps = 1 if runs > 1000 else plan.reps
        for rep in range(reps):
            for side in alternate(rep):
                url = dbs.new(db, f"d{runs}_{side}_{rep}")
                r = attempt(p50, side, "sleepers", "--url", url, "--runs", str(runs),
                            "--sleep", str(sleep), timeout=sleep + 1500)  # fmt: skip
                if r:
                    note = f"all {runs} asleep at once" if r["peak_sleeping"] == runs else f"peak {r['peak_sleeping']} asleep at once"  # fmt: skip
                    add(p50, side, r["p50_ms"], note)
                    add(p99, side, r["p99_ms"])
                    add(rss, side, r["rss_peak_mib"])
                    rss.replay[side].append(r["rss_base_mib"])
        rows += [p50, p99, rss]
    return rows


def workload_e(db: str, dbs: Databases, plan: Plan) -> list[Row]:
    peer = Row("(e) SIGKILL → continuing", "kill the process running a run; until its next step starts", "s",
               "another running worker takes over (--lease-ttl 2)", "process restarted at once (same executor id)")  # fmt: skip
    restart = Row("(e) SIGKILL → continuing", "same, the killed process restarted at once", "s",
                  "`durapipe run` killed, `durapipe resume` started", "process restarted at once (same executor id)")  # fmt: skip
    for rep in range(plan.reps_e):
        for side in alternate(rep):
            url = dbs.new(db, f"e_{side}_{rep}")
            if side == "durapipe":
                r = attempt(peer, side, "kill", "--url", url, "--n", "60", "--mode", "peer", "--lease-ttl", "2")  # fmt: skip
                add(peer, side, r and r["seconds"])
                url2 = dbs.new(db, f"e2_{side}_{rep}")
                r = attempt(restart, side, "kill", "--url", url2, "--n", "60", "--mode", "restart")  # fmt: skip
                add(restart, side, r and r["seconds"])
            else:
                r = attempt(peer, side, "kill", "--url", url, "--n", "60")
                if r:
                    add(peer, side, r["seconds"])
                    add(restart, side, r["seconds"])
    return [peer, restart]


WORKLOADS = {"a": workload_a, "b": workload_b, "c": workload_c, "d": workload_d, "e": workload_e}


# ---------------------------------------------------------------- report


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(vals: list[float], extra: list[str]) -> str:
    if not vals:
        return "—"
    s = fmt(statistics.median(vals))
    if len(vals) > 1:
        s += f" ({fmt(min(vals))}–{fmt(max(vals))})"
    if extra:
        uniq = list(dict.fromkeys(extra))
        s += "; " + ", ".join(uniq[:3])
    return s


def table(db: str, rows: list[Row]) -> str:
    out = [f"### {db}", "",
           "| workload | unit | durapipe | DBOS | durapipe/DBOS |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = "—"
        if r.dp and r.dbos:
            ratio = f"{statistics.median(r.dp) / statistics.median(r.dbos):.2f}"
        label = f"{r.section}: {r.label}<br><sub>durapipe: {r.dp_what}; DBOS: {r.dbos_what}</sub>"
        dp_extra, dbos_extra = r.dp_extra, r.dbos_extra
        if r.unit == "MiB":  # (d) RSS: the idle process for reference
            dp_extra = (
                [f"idle {fmt(statistics.median(r.replay['durapipe']))}"]
                if r.replay["durapipe"]
                else []
            )
            dbos_extra = (
                [f"idle {fmt(statistics.median(r.replay['dbos']))}"] if r.replay["dbos"] else []
            )
        if r.section.startswith("(c)"):
            dp_extra = (
                [f"replay {fmt(statistics.median(r.replay['durapipe']))}"]
                if r.replay["durapipe"]
                else []
            )
            dbos_extra = (
                [f"replay {fmt(statistics.median(r.replay['dbos']))}"] if r.replay["dbos"] else []
            )
        dpc, dbc = cell(r.dp, dp_extra), cell(r.dbos, dbos_extra)
        if r.errors:
            dbc += " <br>**errors:** " + "; ".join(r.errors)[:300]
        out.append(f"| {label} | {r.unit} | {dpc} | {dbc} | {ratio} |")
    fit = linearity(rows)
    if fit:
        out += ["", fit]
    return "\n".join(out)


def linearity(rows: list[Row]) -> str:
    """Least-squares lines through the (c) medians: total resume time and replay alone."""
    pts: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        if not r.section.startswith("(c)"):
            continue
        n = int(r.label.split(" with ")[1].split(" ")[0].replace(",", ""))
        for side, name, total in (("durapipe", "durapipe", r.dp), ("dbos", "DBOS", r.dbos)):
            if total:
                pts.setdefault((name, "resume"), []).append((n, statistics.median(total)))
            if r.replay[side]:
                pts.setdefault((name, "replay"), []).append((n, statistics.median(r.replay[side])))
    parts = []
    for (name, what), p in pts.items():
        if len(p) >= 3:
            xs, ys = [x for x, _ in p], [y for _, y in p]
            slope, icpt = statistics.linear_regression(xs, ys)
            r2 = statistics.correlation(xs, ys) ** 2
            parts.append(
                f"{name} {what} {icpt:.0f} ms + {slope * 1000:.1f} ms per 1,000 steps (r² {r2:.3f})"
            )
    if not parts:
        return ""
    return "Recovery, least-squares lines through the medians: " + "; ".join(parts) + "."


def facts(dbs: Databases, db_kinds: list[str]) -> dict[str, str]:
    f = {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()}, {platform.platform()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "dbos": md.version("dbos"),
        "durapipe": git_rev(),
    }
    try:
        with open("/proc/loadavg") as lf:
            f["load average at start (1/5/15 min)"] = " ".join(lf.read().split()[:3])
        with open("/proc/meminfo") as mf:
            f["memory"] = f"{int(mf.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    if "postgresql" in db_kinds and dbs.pg_url:
        rows = dbs.pg_exec("SELECT current_setting('server_version'), current_setting('fsync'), "
                           "current_setting('synchronous_commit'), current_setting('wal_sync_method')")  # fmt: skip
        v, fsync, sc, wsm = rows[0]
        where = (
            "DURAPIPE_BENCH_PG_URL"
            if dbs.cluster is None
            else "throwaway local cluster (tests/pgcluster.py)"
        )
        f["postgresql"] = (
            f"{v}, {where}: fsync={fsync}, synchronous_commit={sc}, wal_sync_method={wsm}"
        )
    return f


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "durapipe"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return f"{md.version('durapipe')} at {rev}" + (
            " (durapipe/ has uncommitted changes)" if dirty else ""
        )
    except Exception:
        return md.version("durapipe")


SETTINGS = """\
Durability, alike on both sides:
- SQLite: both in WAL mode with `synchronous=FULL` (an fsync per commit). durapipe: its default
  (WAL + FULL, `DURAPIPE_SQLITE_SYNCHRONOUS` unset). DBOS sets neither pragma: SQLite's defaults
  are a rollback journal (`journal_mode=DELETE`) with `synchronous=FULL`; the bench puts DBOS's
  file in WAL mode before launch (journal_mode is stored in the file) and leaves `synchronous` at
  FULL. {delete_note}
- PostgreSQL: one server, a fresh database per measurement and side, server defaults
  (`fsync=on`, `synchronous_commit=on`).
- Long histories for (c) are written with `synchronous=OFF` / `synchronous_commit=off` on both
  sides; only the resume that follows is timed, with the settings above.

Each side runs with its defaults otherwise: DBOS {dbos_v} with `log_level=WARNING`, async workflows
and steps, its default pool and queue polling (1 s); durapipe workers with the default
concurrency (100), poll interval (0.5 s on SQLite, 2 s on PostgreSQL, plus LISTEN/NOTIFY there)
and lease TTL (30 s) unless the row says otherwise. Medians over the repetitions (min–max);
timing starts inside each process, after imports and DBOS.launch()/open_store.
- (c) DBOS 3.x recovers a PENDING workflow by re-enqueueing it on its internal queue (polled every
  1 s); "replay" is the time from the workflow function's entry to its last recorded step
  returning, on both sides.
- (b), (d) runs are started with at most 100 start calls in flight, on both sides.
- (d) delay = when the step after the sleep began minus the wake time the sleep recorded.
- (e) time from SIGKILL to the start of the first step that runs after it (steps take 50 ms; the
  kill comes after 20 of 60). DBOS without Conductor recovers a crashed process's workflows when
  a process with the same executor id launches, so its row is that restart, done at once.
"""


SCALE_MARK = "<!-- bench/scale.py writes from here on; bench/run.py keeps it -->"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; no 10,000 sleepers")
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="repeatable; default both")  # fmt: skip
    ap.add_argument("--only", default="abcde", help="workloads to run, e.g. --only ab")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    a = ap.parse_args()
    plan = QUICK if a.quick else FULL
    db_kinds = a.db or ["sqlite", "postgresql"]
    command = " ".join(["python bench/run.py", *(shlex.quote(x) for x in sys.argv[1:])])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops PostgreSQL
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="durapipe-bench-"))
    dbs = Databases(tmp)
    sections = []
    try:
        if "postgresql" in db_kinds:
            log(f"PostgreSQL: {dbs.start_pg()}")
        info = facts(dbs, db_kinds)
        for db in db_kinds:
            rows: list[Row] = []
            for w in a.only:
                log(f"[{time.monotonic() - started:6.0f}s] {db}: workload ({w})")
                rows += WORKLOADS[w](db, dbs, plan)
            sections.append(table(db, rows))
            print("\n" + sections[-1] + "\n", flush=True)
    finally:
        dbs.stop()
    took = time.monotonic() - started
    delete_note = ("The extra (a) row runs DBOS with its own default (DELETE journal) for reference."
                   if plan.dbos_delete_journal and "sqlite" in db_kinds else "")  # fmt: skip
    try:
        with open("/proc/loadavg") as lf:
            info["load average at the end"] = (
                " ".join(lf.read().split()[:3])
                + " (2 cores: anything near 2 or more means other work ran too)"
            )
    except OSError:
        pass
    head = [
        "# durapipe vs DBOS: results",
        "",
        "Generated by `bench/run.py`; do not edit. See bench/README.md.",
        "",
        f"Command: `{command}` ({took / 60:.1f} minutes)",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        SETTINGS.format(delete_note=delete_note, dbos_v=info["dbos"]),
    ]
    # The part bench/scale.py writes (scale and the hot path) is kept as it is.
    out = Path(a.out)
    kept = out.read_text().partition(SCALE_MARK)[2] if out.exists() else ""
    text = "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"
    out.write_text(text + ("\n" + SCALE_MARK + kept if kept else ""))
    log(f"wrote {a.out} ({took / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
