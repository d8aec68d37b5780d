"""Wake on time (issue #21): runs sleeping and due within the same second; wake-up delay.

    python bench/wake.py [--runs 10000] [--spread 1] [--due-in 40] [--db sqlite] [--db postgresql]
                         [--before REV] [--no-dbos] [--reps 1] [--md FILE]

Each measurement starts one `durapipe worker --suspend-after 1` (default concurrency), starts
--runs runs that sleep until an instant --due-in seconds after the first start, the instants
spread evenly over --spread seconds (so all are suspended in the database before the first is
due), and waits until all have run the step after their sleep. Delay = when that step began minus
the wake time its sleep recorded. Also: where the delay went (due -> `timer_fired` written: taken,
history read, replayed to the sleep; -> the step began: that event's commit), the worker's RSS
before the starts, once all are asleep, and at its peak, and its CPU seconds from the due time to
the last run done. --before REV measures the durapipe of that git revision too (its tree is
exported to a temp folder, with this checkout's bench sides), interleaved with this checkout's:
the machine is shared, so the two see the same load. The DBOS counterpart: `side_dbos.py
sleepers --due-in` (one process, the same workflows, DBOS.sleep).

PostgreSQL: a throwaway cluster with fsync=on, synchronous_commit=on (or DURAPIPE_BENCH_PG_URL),
one new database per measurement. SQLite: a new file each, WAL, synchronous=FULL.
Takes about (--due-in + 30 s) per measurement: ~25 min with the defaults, before and DBOS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import env_with_repo  # noqa: E402

SIDES = ("side_durapipe.py", "side_dbos.py", "dp_pipelines.py", "dbos_app.py", "benchlib.py")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def export(rev: str) -> Path:
    """The tree of ``rev`` in a temp folder, with this checkout's bench sides."""
    dest = Path(tempfile.mkdtemp(prefix="durapipe-wake-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    for name in SIDES:
        shutil.copy(HERE / name, dest / "bench" / name)
    return dest


class Databases:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.n, self.cluster, self.pg = tmp, 0, None, None

    def new(self, db: str) -> str:
        self.n += 1
        if db == "sqlite":
            return f"sqlite:///{self.tmp}/wake{self.n}.db"
        if self.pg is None:
            self.pg = os.environ.get("DURAPIPE_BENCH_PG_URL")
            if not self.pg:
                from pgcluster import PgCluster

                self.cluster = PgCluster(durable=True)
                self.pg = self.cluster.start()
        from durapipe._store.postgres import create_database

        name = f"wake_{os.getpid()}_{self.n}"
        asyncio.run(create_database(self.pg, name))
        return self.pg.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def measure(
    side: str, root: Path, url: str, a: argparse.Namespace, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    script = "side_dbos.py" if side == "dbos" else "side_durapipe.py"
    cmd = [sys.executable, str(root / "bench" / script), "sleepers", "--url", url]
    cmd += ["--runs", str(a.runs), "--due-in", str(a.due_in), "--spread", str(a.spread)]
    cmd += [f"--worker-arg={x}" for x in extra]
    env = env_with_repo()
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    before = loadavg()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.due_in + 900)
    line = next((x for x in out.stdout.splitlines()[::-1] if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{side} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    res: dict[str, Any] = json.loads(line[len("RESULT ") :])
    res.update(side=side, load_start=before, load_end=loadavg())
    print(side, url.split("/")[-1], json.dumps(res), flush=True)
    return res


def markdown(results: dict[str, Any]) -> str:
    """The section for bench/results.md."""
    a = results["args"]
    out = [
        "## Wake on time: runs due within the same second (bench/wake.py)",
        "",
        f"`{results['command']}` — {a['runs']:,} runs suspended in the database (one `durapipe "
        f"worker --suspend-after 1`, default concurrency 100; DBOS: one process), due within "
        f"{a['spread']:g} s. Delay = the step after the sleep began − the wake time the sleep "
        "recorded. *fired* = due → `timer_fired` written (taken, history read, replayed); "
        "*step* = `timer_fired` → the step began. RSS of the process holding them: before the "
        "starts / all asleep / peak. CPU: the worker's, due → last done. PostgreSQL: throwaway "
        "cluster, fsync=on, synchronous_commit=on; SQLite: WAL, synchronous=FULL. "
        f"{results['when']}.",
        "",
        "| database | side | delay p50 | p99 | max | fired p50 / p99 | step p50 / p99 "
        "| RSS MiB | worker CPU s | load avg start → end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        fired = step = cpu = "—"
        if "fired_p50_ms" in r:
            fired = f"{r['fired_p50_ms']:,.0f} / {r['fired_p99_ms']:,.0f} ms"
            step = f"{r['step_p50_ms']:,.0f} / {r['step_p99_ms']:,.0f} ms"
            cpu = f"{r['worker_cpu_s']:.1f}"
        idle = r.get("rss_idle_mib")
        rss = (
            f"{r['rss_base_mib']:.0f} / {idle:.0f} / {r['rss_peak_mib']:.0f}"
            if idle
            else (f"{r['rss_base_mib']:.0f} / — / {r['rss_peak_mib']:.0f}")
        )
        label = r["label"]
        if r.get("no_sleep_recorded"):  # DBOS: workflows that began after their wake time
            label += f" ({r['no_sleep_recorded']:,} began after their wake time: not measured)"
        out.append(
            f"| {r['db']} | {label} | {r['p50_ms']:,.0f} ms | {r['p99_ms']:,.0f} ms "
            f"| {r['max_ms']:,.0f} ms | {fired} | {step} | {rss} | {cpu} "
            f"| {r['load_start']} → {r['load_end']} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--due-in", type=float, default=40.0)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--before", default=None, help="a git revision to measure too")
    ap.add_argument("--no-dbos", action="store_true")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--concurrency", type=int, action="append", default=[],
                    help="also measure this checkout with `worker --concurrency N` (repeatable)")  # fmt: skip
    ap.add_argument("--md", default=None, help="write the markdown section to this file")
    a = ap.parse_args()
    command = " ".join(["python bench/wake.py", *(shlex.quote(x) for x in sys.argv[1:])])
    tmp = Path(tempfile.mkdtemp(prefix="durapipe-wake-"))
    dbs = Databases(tmp)
    sides: list[tuple[str, str, Path, tuple[str, ...]]] = []
    before = None
    if a.before:
        before = export(a.before)
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.before],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        sides.append(("durapipe", f"durapipe before ({rev})", before, ()))
    sides.append(("durapipe", "durapipe", ROOT, ()))
    for n in a.concurrency:
        sides.append(
            ("durapipe", f"durapipe, `--concurrency {n}`", ROOT, ("--concurrency", str(n)))
        )
    if not a.no_dbos:
        sides.append(("dbos", "DBOS", ROOT, ()))
    rows = []
    try:
        for db in a.db or ["sqlite", "postgresql"]:
            for rep in range(a.reps):
                order = sides if rep % 2 == 0 else sides[::-1]
                for side, label, root, extra in order:
                    r = measure(side, root, dbs.new(db), a, extra)
                    rows.append({**r, "db": db, "label": label})
    finally:
        dbs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if before is not None:
            shutil.rmtree(before, ignore_errors=True)
    results = {
        "command": command,
        "args": vars(a),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    md = markdown(results)
    print(md)
    if a.md:
        Path(a.md).write_text(md)


if __name__ == "__main__":
    main()
