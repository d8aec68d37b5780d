"""Core hot path: µs per trivial step against the floor, and resume time of long histories.

    python bench/core.py --db sqlite --db postgresql [--steps 1000] [--reps 5] [--resume 1000,10000]

For each database, ``--reps`` rounds, each measuring in turn (interleaved, so all three see the
same disk at about the same time):

- the **floor**: a bare one-row INSERT + COMMIT on the same database and settings, the price of
  one durable transaction, which a journaled step cannot go below;
- a step **in-process**: ``testing.run_pipeline`` of a run of ``--steps`` trivial steps on a store
  that has already run one (a worker's warm connection), wall time / steps;
- a step **through the CLI**: ``durapipe run bench/core.py:many_steps`` as a user runs it, a
  subprocess; its steps' cost is read from the history it wrote (the time between the first and
  the last step's completion, over the steps between), since the process's start (imports,
  opening the database) is a fixed cost of its own, printed beside it.

Medians over the rounds, with the ratio to the floor. PostgreSQL comes from
DURAPIPE_BENCH_PG_URL, or a throwaway cluster (tests/pgcluster.py) with the server's default
durability (fsync on, synchronous_commit on); SQLite runs in WAL mode with synchronous=FULL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import durapipe as dp  # noqa: E402
from durapipe._store import open_store  # noqa: E402
from durapipe.testing import resume_run, run_pipeline  # noqa: E402

FAIL_AT_END = {"on": False}


@dp.step
async def trivial(i: int) -> int:
    return i


@dp.pipeline(name="bench_steps", version="1")
async def many_steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await trivial(i)
    if FAIL_AT_END["on"]:
        raise RuntimeError("stop here so the run can be resumed")
    return total


async def per_step(url: str, n: int, reps: int) -> list[tuple[float, float]]:
    """In-process runs of ``n`` steps: (µs per step between the first and the last step's
    completion, as through_cli reads it; the whole run's wall time / n, which also pays for
    creating, claiming and ending the run)."""
    out = []
    store = await open_store(url, migrate=True)
    try:
        await run_pipeline(store, many_steps, n=10)  # connections made, statements prepared
        for _ in range(reps):
            t0 = time.perf_counter()
            view = await run_pipeline(store, many_steps, n=n)
            dt = time.perf_counter() - t0
            assert view.status == "completed", view.error
            ats = [e.at for e in await store.events(view.run_id) if e.kind == "step_completed"]
            out.append(((ats[-1] - ats[0]) / (len(ats) - 1) * 1e6, dt / n * 1e6))
    finally:
        await store.close()
    return out


async def resume_time(url: str, n: int, reps: int) -> list[float]:
    out = []
    store = await open_store(url, migrate=True)
    try:
        for _ in range(reps):
            FAIL_AT_END["on"] = True
            view = await run_pipeline(store, many_steps, n=n)
            assert view.status == "failed"
            FAIL_AT_END["on"] = False
            t0 = time.perf_counter()
            view = await resume_run(store, many_steps, view.run_id)
            out.append(time.perf_counter() - t0)
            assert view.status == "completed", view.error
    finally:
        await store.close()
    return out


async def floor(url: str, n: int) -> float:
    """µs per bare one-row INSERT + COMMIT on the same database and settings: the disk's price
    of one durable transaction, which a journaled step cannot go below."""
    import sqlite3

    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1] + ".floor"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={os.environ.get('DURAPIPE_SQLITE_SYNCHRONOUS', 'FULL')}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (f'{{"result": {i}}}',))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        conn.close()
        return dt / n * 1e6
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        await pg.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id serial PRIMARY KEY, data text)"
        )
        t0 = time.perf_counter()
        for i in range(n):
            await pg.execute("INSERT INTO bench_floor (data) VALUES ($1)", f'{{"result": {i}}}')
        dt = time.perf_counter() - t0
    finally:
        await pg.close()
    return dt / n * 1e6


def through_cli(url: str, n: int) -> tuple[float, float]:
    """``durapipe run`` of an ``n``-step run in a subprocess: (µs per step, from the history it
    wrote; the command's whole wall time in seconds)."""
    import subprocess

    here = Path(__file__).resolve()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "durapipe", "run", f"{here}:many_steps", "-i", f"n={n}"],
        env={**os.environ, "DURAPIPE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"durapipe run failed: {proc.stderr.strip()}")
    run_id = proc.stdout.split()[0]
    ats = asyncio.run(_completions(url, run_id))
    return (ats[-1] - ats[0]) / (len(ats) - 1) * 1e6, wall


async def _completions(url: str, run_id: str) -> list[float]:
    async with await dp.Client.connect(url) as client:
        events = await client.events(run_id)
    return [e["at"] for e in events if e["kind"] == "step_completed"]


def pg_url() -> tuple[str, Any]:
    url = os.environ.get("DURAPIPE_BENCH_PG_URL")
    if url:
        return url, None
    from pgcluster import PgCluster

    c = PgCluster(durable=True)
    c.start()
    return c.url, c


def _med(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.0f} µs (min {min(xs):.0f}, max {max(xs):.0f})"


def _cell(xs: list[float], base: float | None = None) -> str:
    text = f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
    if base:
        text += f" **{statistics.median(xs) / base:.2f}×**"
    return text


def throughput(url: str, reps: int) -> list[float]:
    """Group commit: 1,000 runs × 3 trivial steps started with Client.start while one `durapipe
    worker` runs them (bench/side_durapipe.py), runs/s, a fresh database each round."""
    import json
    import subprocess
    import uuid

    from durapipe._store import create_database, drop_database

    server = url
    out = []
    for _ in range(reps):
        name = "dp_tp_" + uuid.uuid4().hex[:10]
        asyncio.run(create_database(server, name))
        db = server.rsplit("/", 1)[0] + "/" + name
        try:
            subprocess.run(
                [sys.executable, "-m", "durapipe", "db", "upgrade", "--database-url", db],
                check=True,
                capture_output=True,
            )
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).parent / "side_durapipe.py"), "throughput"]
                + ["--url", db, "--runs", "1000", "--workers", "1"],
                capture_output=True,
                text=True,
                check=True,
            )
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            out.append(float(json.loads(line[7:])["runs_per_s"]))
        finally:
            asyncio.run(drop_database(server, name))
    return out


def markdown(res: dict[str, Any]) -> str:
    """The hot path's rows for bench/results.md."""
    lines = [
        "### The hot path: a step against one durable commit (issue #22)",
        "",
        f"`{res['command']}`; load average {res['load_start']} at the start, {res['load_end']} at"
        " the end. Per trivial `@dp.step` in runs of "
        f"{res['steps']:,} steps, µs, median (min–max) of {res['reps']} interleaved rounds, and"
        " the ratio to the floor measured in the same rounds. The floor is a bare one-row"
        " `INSERT` + `COMMIT` on the same database and settings. A step's cost is read from the"
        " history the run wrote (first to last step completion, over the steps between), on both"
        " paths. In-process: `testing.run_pipeline` on a warm store (beside it, the whole run's"
        " wall time over its steps, which also pays for creating, claiming and ending the run)."
        " Through the CLI: `durapipe run` in a subprocess (beside it, the whole command's wall"
        " time: interpreter, imports, opening the database, creating and ending the run).",
        "",
        "| database | floor: INSERT+COMMIT | step, in-process | in-process, whole run / steps"
        " | step, `durapipe run` | `durapipe run`, whole command |",
        "|---|---|---|---|---|---|",
    ]
    for db, r in res["dbs"].items():
        base = statistics.median(r["floor"])
        cli = _cell(r["cli"], base) if r["cli"] else "—"
        wall = f"{statistics.median(r['wall']):.2f} s" if r["wall"] else "—"
        lines.append(
            f"| {db} ({r['note']}) | {_cell(r['floor'])} | {_cell(r['inproc'], base)}"
            f" | {_cell(r['inproc_wall'], base)} | {cli} | {wall} |"
        )
    if res.get("throughput"):
        tp = res["throughput"]
        lines += [
            "",
            "Group commit, PostgreSQL: 1,000 runs × 3 trivial steps, `Client.start` + one `durapipe"
            f" worker` (`bench/side_durapipe.py throughput`): **{statistics.median(tp):,.0f} runs/s**"
            f" ({min(tp):,.0f}–{max(tp):,.0f}, {len(tp)} rounds).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--resume", default="1000,10000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-cli", action="store_true", help="skip the `durapipe run` measurement")
    ap.add_argument(
        "--throughput", type=int, default=0, metavar="N",
        help="also N rounds of group-commit throughput on PostgreSQL (1,000 runs x 3 steps)",
    )  # fmt: skip
    ap.add_argument("--md", help="also write the figures as a markdown section to this file")
    a = ap.parse_args()
    dbs = a.db or ["sqlite", "postgresql"]
    cluster = None
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res: dict[str, Any] = {
        "command": "python bench/core.py " + shlex.join(sys.argv[1:]),
        "load_start": load,
        "steps": a.steps,
        "reps": a.reps,
        "dbs": {},
    }
    print(f"load average at start: {load}")
    for db in dbs:
        if db == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            note = f"WAL, synchronous={os.environ.get('DURAPIPE_SQLITE_SYNCHRONOUS', 'FULL')}"
        else:
            url, cluster = pg_url()
            note = "fsync on, synchronous_commit on"
        fl: list[float] = []
        us: list[float] = []
        us_wall: list[float] = []
        cli: list[float] = []
        walls: list[float] = []
        for _ in range(a.reps):  # interleaved, so all see the same disk
            fl.append(asyncio.run(floor(url, a.steps)))
            steady, whole = asyncio.run(per_step(url, a.steps, 1))[0]
            us.append(steady)
            us_wall.append(whole)
            if not a.no_cli:
                per, wall = through_cli(url, a.steps)
                cli.append(per)
                walls.append(wall)
        res["dbs"][db] = {
            "note": note, "floor": fl, "inproc": us, "inproc_wall": us_wall, "cli": cli,
            "wall": walls,
        }  # fmt: skip
        base = statistics.median(fl)
        print(f"{db} ({note}), {a.reps} interleaved rounds, runs of {a.steps} trivial steps:")
        print(f"  floor, bare INSERT+COMMIT:   {_med(fl)}")
        print(
            f"  step, in-process:            {_med(us)}  ratio {statistics.median(us) / base:.2f}"
            f"  (the whole run / steps: {statistics.median(us_wall):.0f} µs)"
        )
        if cli:
            print(
                f"  step, through `durapipe run`: {_med(cli)}  ratio {statistics.median(cli) / base:.2f}"
                f"  (the whole command: {statistics.median(walls):.2f} s)"
            )
        for n in [int(x) for x in a.resume.split(",") if x]:
            ts = asyncio.run(resume_time(url, n, a.reps))
            print(
                f"  resume of {n:>6} recorded steps: median {statistics.median(ts) * 1000:.0f} ms  (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f})"
            )
        if db == "postgresql" and a.throughput:
            tp = throughput(url, a.throughput)
            res["throughput"] = tp
            print(
                f"  group commit, 1,000 runs x 3 steps, 1 worker: median {statistics.median(tp):,.0f} runs/s"
                f"  (min {min(tp):,.0f}, max {max(tp):,.0f})"
            )
    res["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end: {res['load_end']}")
    if a.md:
        Path(a.md).write_text(markdown(res))
    if cluster is not None:
        cluster.stop()


if __name__ == "__main__":
    main()
