"""Cost as work grows (issue #21 item 6): steps per run, runs in flight, payload size.

    python bench/growth.py --db sqlite --db postgresql [--md FILE] [--img-dir bench/img]
    python bench/growth.py --db sqlite --quick        # development sizes: ~1 minute

Three curves per database, each a least-squares line (cost = a + b * size: b is the cost per
unit) and a log-log fit (cost ∝ size^k: k ≈ 1 is linear, k > 1 super-linear) over the points
where the size dominates (the top three sizes; a fixed cost flattens the bottom of a curve):

(a) steps per run: 1, 10, 100, 1,000, 10,000, 100,000 trivial steps in one run
    (`testing.run_pipeline`, in this process) -> µs per step; the run then fails and is resumed
    (`testing.resume_run`) -> the resume's time (its replay of every recorded step).
(b) runs in flight: 1, 10, 100, 1,000, 10,000 runs of 3 trivial steps started together
    (`Client.start`, 100 calls in flight) while one `durapipe worker` runs them -> runs/s and
    µs per step, from the first start to the last `finished_at`.
(c) payload size: a step result of 100 B, 1 KB, 10 KB, 100 KB, 1 MB (incompressible text; 200,
    200, 200, 50 and 20 steps a run) -> µs per step and MB/s.

SQLite: a fresh file, WAL + synchronous=FULL. PostgreSQL: a fresh database on
DURAPIPE_BENCH_PG_URL, or on a throwaway durable cluster (tests/pgcluster.py, fsync=on,
synchronous_commit=on). A PNG per database (matplotlib, the `bench` extra) goes to --img-dir.
The full run took 6.5 minutes for both databases on 2 cores at load average 6-10 (the
100,000-step runs 131 s on SQLite, 161 s on PostgreSQL; ~40-80 s on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import growth_pipelines as G  # noqa: E402
from benchlib import bounded, deadline, env_with_repo, log  # noqa: E402

import durapipe as dp  # noqa: E402
from durapipe._store import open_store  # noqa: E402
from durapipe.testing import resume_run, run_pipeline  # noqa: E402

PIPES = str(HERE / "growth_pipelines.py")
STEPS = [1, 10, 100, 1_000, 10_000, 100_000]
FLIGHT = [1, 10, 100, 1_000, 10_000]
PAYLOAD = [100, 1_000, 10_000, 100_000, 1_000_000]
PAYLOAD_STEPS = {100: 200, 1_000: 200, 10_000: 200, 100_000: 50, 1_000_000: 20}


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


# ------------------------------------------------------------------ fits


def linfit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x -> (a, b)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def exponent(xs: list[float], ys: list[float]) -> float:
    """k of y ∝ x^k, a least-squares line through (log x, log y)."""
    return linfit([math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys])[1]


# ------------------------------------------------------------------ the curves


async def curve_steps(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    store = await open_store(url, migrate=True)
    try:
        await run_pipeline(store, G.steps, n=100)  # warm-up (imports, connections): not measured
        for n in sizes:
            reps = 5 if n <= 1_000 else 1
            runs, resumes, replays = [], [], []
            for _ in range(reps):
                G.FAIL_AT_END["on"] = True
                t0 = time.perf_counter()
                view = await run_pipeline(store, G.steps, n=n)
                runs.append(time.perf_counter() - t0)
                assert view.status == "failed", view.status
                G.FAIL_AT_END["on"] = False
                t0 = time.perf_counter()
                view = await resume_run(store, G.steps, view.run_id)
                resumes.append(time.perf_counter() - t0)
                replays.append(G.TIMES["looped"] - G.TIMES["entered"])
                assert view.status == "completed", view.error
            row = {"size": n, "seconds": statistics.median(runs),
                   "us_per_step": statistics.median(runs) / n * 1e6,
                   "resume_s": statistics.median(resumes), "replay_s": statistics.median(replays)}  # fmt: skip
            log(f"  (a) {row}")
            out.append(row)
    finally:
        await store.close()
    return out


async def curve_flight(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    import subprocess

    from sqlalchemy import text

    out = []
    store = await open_store(url, migrate=True)
    client = dp.Client(store)
    worker_log = tempfile.NamedTemporaryFile("w", prefix="dp-growth-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
        [sys.executable, "-m", "durapipe", "worker", "-m", PIPES, "--database-url", url],
        stdout=subprocess.DEVNULL, stderr=worker_log, env=env_with_repo(),
    )  # fmt: skip
    try:
        end = deadline(60)
        while True:
            rows = await store.run_read(
                lambda c: c.execute(text("SELECT pid FROM durapipe_workers WHERE stopped_at IS NULL")).all()
            )  # fmt: skip
            if proc.pid in {int(r[0]) for r in rows}:
                break
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"the worker did not start; see {worker_log.name}")
            await asyncio.sleep(0.05)
        for i, n in enumerate([10, *sizes]):  # the first: a warm-up of the worker, not kept
            t0 = time.time()
            await bounded([client.start(G.three) for _ in range(n)])
            end = deadline(900)
            while True:
                ((left,),) = await store.run_read(
                    lambda c: c.execute(
                        text("SELECT count(*) FROM durapipe_runs WHERE pipeline = 'growth_three' AND status != 'completed'")
                    ).all()
                )  # fmt: skip
                if left == 0:
                    break
                if time.monotonic() > end:
                    raise TimeoutError(f"{left} of {n} runs not done")
                await asyncio.sleep(0.02 if n < 100 else 0.1)
            ((last,),) = await store.run_read(
                lambda c: c.execute(
                    text("SELECT max(finished_at) FROM durapipe_runs WHERE pipeline = 'growth_three'")
                ).all()
            )  # fmt: skip
            dt = float(last) - t0
            row = {
                "size": n,
                "seconds": dt,
                "runs_per_s": n / dt,
                "us_per_step": dt / (3 * n) * 1e6,
            }
            log(f"  (b) {row}")
            if i > 0:
                out.append(row)
            # the next size starts with an empty table of this pipeline's runs
            await _delete_runs(url, "growth_three")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        worker_log.close()
        await store.close()
    return out


async def _delete_runs(url: str, pipeline: str) -> None:
    """Drop the finished runs of a curve's point (bench-only, on its throwaway database)."""
    q_events = "DELETE FROM durapipe_events WHERE run_id IN (SELECT id FROM durapipe_runs WHERE pipeline = {p})"
    q_runs = "DELETE FROM durapipe_runs WHERE pipeline = {p}"
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :], timeout=60) as c:
            c.execute(q_events.format(p="?"), (pipeline,))
            c.execute(q_runs.format(p="?"), (pipeline,))
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(q_events.format(p="$1"), pipeline)
        await conn.execute(q_runs.format(p="$1"), pipeline)
    finally:
        await conn.close()


async def curve_payload(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    store = await open_store(url, migrate=True)
    try:
        await run_pipeline(store, G.payloads, size=100, n=50)  # warm-up: not measured
        for size in sizes:
            n = PAYLOAD_STEPS.get(size, 100)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                view = await run_pipeline(store, G.payloads, size=size, n=n)
                times.append(time.perf_counter() - t0)
                assert view.status == "completed", view.error
            dt = statistics.median(times)
            row = {"size": size, "steps": n, "seconds": dt, "us_per_step": dt / n * 1e6,
                   "mb_per_s": size * n / dt / 1e6}  # fmt: skip
            log(f"  (c) {row}")
            out.append(row)
    finally:
        await store.close()
    return out


# ------------------------------------------------------------------ driver


def fresh_url(db: str, server: str | None, name: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='dp-growth-')}/bench.db"
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


def measure(db: str, server: str | None, quick: bool, only: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {"db": db, "load_start": loadavg()}
    if "steps" in only:
        log(f"[{db}] (a) steps per run")
        sizes = STEPS[:4] if quick else STEPS
        res["steps"] = asyncio.run(curve_steps(fresh_url(db, server, "growth_steps"), sizes))
    if "flight" in only:
        log(f"[{db}] (b) runs in flight")
        sizes = FLIGHT[:4] if quick else FLIGHT
        res["flight"] = asyncio.run(curve_flight(fresh_url(db, server, "growth_flight"), sizes))
    if "payload" in only:
        log(f"[{db}] (c) payload size")
        sizes = PAYLOAD[:3] if quick else PAYLOAD
        res["payload"] = asyncio.run(curve_payload(fresh_url(db, server, "growth_payload"), sizes))
    res["load_end"] = loadavg()
    return res


def fits(points: list[dict[str, Any]], key: str) -> dict[str, float]:
    xs = [float(p["size"]) for p in points]
    ys = [float(p[key]) for p in points]
    a, b = linfit(xs, ys)
    return {"a": a, "b": b, "k": exponent(xs[-3:], ys[-3:]), "k_all": exponent(xs, ys)}


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(
    results: list[dict[str, Any]], command: str = "", images: dict[str, str] | None = None
) -> str:
    out = ["## Cost as work grows (issue #21, item 6)", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    out += [
        "SQLite: WAL, synchronous=FULL; PostgreSQL: throwaway cluster, fsync=on, "
        "synchronous_commit=on. Fits: least squares `cost = a + b·size` (b: the cost per unit), and "
        "the exponent k of `cost ∝ size^k` from a log-log line through the top three sizes "
        "(k ≈ 1: linear; over all sizes in brackets, where a fixed cost pulls it below 1).",
        "",
    ]
    for r in results:
        out += [f"### {r['db']} (load average {r['load_start']} → {r['load_end']})", ""]
        if images and r["db"] in images:
            out += [f"![cost against size, {r['db']}]({images[r['db']]})", ""]
        if "steps" in r:
            pts = r["steps"]
            f, fr, fp = fits(pts, "seconds"), fits(pts, "resume_s"), fits(pts, "replay_s")
            out += [
                "(a) steps per run",
                "",
                "| steps | run | µs/step | resume | of which replay |",
                "|---|---|---|---|---|",
            ]
            out += [
                f"| {p['size']:,} | {p['seconds'] * 1000:,.1f} ms | {_n(p['us_per_step'])} | {p['resume_s'] * 1000:,.1f} ms | {p['replay_s'] * 1000:,.1f} ms |"
                for p in pts
            ]
            out += [
                f"| fit | {f['b'] * 1e6:,.0f} µs/step, k = {f['k']:.2f} ({f['k_all']:.2f}) | | {fr['b'] * 1e6:,.1f} µs/step, k = {fr['k']:.2f} ({fr['k_all']:.2f}) | {fp['b'] * 1e6:,.1f} µs/step, k = {fp['k']:.2f} ({fp['k_all']:.2f}) |",
                "",
            ]
        if "flight" in r:
            pts = r["flight"]
            f = fits(pts, "seconds")
            out += [
                "(b) runs in flight (3 steps each, one worker)",
                "",
                "| runs | until the last finished | runs/s | µs/step |",
                "|---|---|---|---|",
            ]
            out += [
                f"| {p['size']:,} | {p['seconds'] * 1000:,.0f} ms | {_n(p['runs_per_s'])} | {_n(p['us_per_step'])} |"
                for p in pts
            ]
            out += [
                f"| fit | {f['b'] * 1000:,.2f} ms/run, k = {f['k']:.2f} ({f['k_all']:.2f}) | | |",
                "",
            ]
        if "payload" in r:
            pts = r["payload"]
            f = fits(pts, "us_per_step")
            out += [
                "(c) payload size (a step's result)",
                "",
                "| bytes | steps | µs/step | MB/s |",
                "|---|---|---|---|",
            ]
            out += [
                f"| {p['size']:,} | {p['steps']} | {_n(p['us_per_step'])} | {p['mb_per_s']:.2f} |"
                for p in pts
            ]
            out += [
                f"| fit | | {f['a']:,.0f} µs + {f['b'] * 1000:,.2f} µs/KB, k = {f['k']:.2f} ({f['k_all']:.2f}) | |",
                "",
            ]
    return "\n".join(out) + "\n"  # fmt: skip


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [
        ("steps", "seconds", "(a) steps per run", "steps in one run", "run time (s)", "resume_s", "resume of the run (s)"),
        ("flight", "seconds", "(b) runs in flight, 3 steps each", "runs started together", "until the last finished (s)", None, None),
        ("payload", "us_per_step", "(c) payload size", "step result (bytes)", "µs per step", None, None),
    ]  # fmt: skip
    present = [c for c in curves if c[0] in r]
    fig, axes = plt.subplots(1, len(present), figsize=(5.2 * len(present), 4.4), squeeze=False)
    for ax, (name, key, title, xl, yl, key2, label2) in zip(axes[0], present, strict=True):
        pts = r[name]
        xs = [p["size"] for p in pts]
        ys = [p[key] for p in pts]
        f = fits(pts, key)
        ax.loglog(xs, ys, "o-", color="tab:blue", label=f"{yl}  (k = {f['k']:.2f})")
        if key2:
            ys2 = [p[key2] for p in pts]
            f2 = fits(pts, key2)
            ax.loglog(xs, ys2, "s-", color="tab:orange", label=f"{label2}  (k = {f2['k']:.2f})")
        # a slope-1 reference through the largest point: a linear cost follows it
        ref = [ys[-1] * x / xs[-1] for x in xs]
        ax.loglog(xs, ref, ":", color="grey", label="linear (slope 1)")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"durapipe: cost against size, {r['db']} ({'WAL, synchronous=FULL' if r['db'] == 'sqlite' else 'fsync=on, synchronous_commit=on'})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--only", action="append", choices=["steps", "flight", "payload"])
    ap.add_argument("--quick", action="store_true", help="development sizes")
    ap.add_argument("--md", default=None, help="write the markdown section to this file")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    ap.add_argument(
        "--from-json", default=None, help="redo the markdown and plots from a --json file"
    )
    ap.add_argument("--img-dir", default=str(HERE / "img"))
    a = ap.parse_args()
    if a.from_json:
        results = json.loads(Path(a.from_json).read_text())
    else:
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
                results.append(
                    measure(db, server, a.quick, a.only or ["steps", "flight", "payload"])
                )
        finally:
            if cluster is not None:
                cluster.stop()
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    images: dict[str, str] = {}
    img_dir = Path(a.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        p = img_dir / f"growth-{r['db']}.png"
        plot(r, p)
        images[r["db"]] = os.path.relpath(p, HERE)
    md = markdown(results, "python bench/growth.py " + " ".join(sys.argv[1:]), images)
    print(md)
    if a.md:
        Path(a.md).write_text(md)


if __name__ == "__main__":
    main()
