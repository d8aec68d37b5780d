"""The durapipe side of bench/run.py: one measurement per process, result as a RESULT line.

    python bench/side_durapipe.py WORKLOAD --url URL [options]

Runs the durapipe of this repository (run.py puts it first on PYTHONPATH); `durapipe worker`,
`durapipe run` and `durapipe resume` are started as `python -m durapipe ...` subprocesses.
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import dp_pipelines as P  # noqa: E402
from benchlib import (  # noqa: E402
    RssSampler,
    bounded,
    deadline,
    emit,
    env_with_repo,
    pct,
    rss_mib,
    wake_stats,
)
from sqlalchemy import text  # noqa: E402

import durapipe as dp  # noqa: E402
from durapipe._runner import Runner  # noqa: E402
from durapipe._store import open_store  # noqa: E402
from durapipe.testing import resume_run, run_pipeline  # noqa: E402

PIPES = str(HERE / "dp_pipelines.py")
CLI = [sys.executable, "-m", "durapipe"]


async def sql(store: Any, q: str, **params: Any) -> list[Any]:
    return await store.run_read(lambda conn: conn.execute(text(q), params).all())


class Workers:
    """`durapipe worker` subprocesses (their stderr goes to a log file)."""

    def __init__(self, url: str, n: int, *extra: str) -> None:
        self.log = tempfile.NamedTemporaryFile(
            "w", prefix="dp-worker-", suffix=".log", delete=False
        )  # noqa: SIM115
        cmd = [*CLI, "worker", "-m", PIPES, "--database-url", url, *extra]
        self.procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=env_with_repo())
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


async def wait_done(store: Any, n: int, timeout: float) -> None:
    end = deadline(timeout)
    while time.monotonic() < end:
        counts = await store.count_by_status()
        if counts.get("completed", 0) >= n:
            return
        bad = {
            k: v for k, v in counts.items() if k in ("failed", "blocked", "aborted", "cancelled")
        }
        if bad:
            raise RuntimeError(f"runs ended badly: {bad}")
        # Not oftener: each count reads every run, on the database being measured.
        await asyncio.sleep(0.5)
    raise TimeoutError(f"only {await store.count_by_status()} after {timeout}s")


async def start_many(client: dp.Client, pipeline: Any, n: int, **inputs: Any) -> list[str]:
    return await bounded([client.start(pipeline, **inputs) for _ in range(n)])


# ------------------------------------------------------------------ workloads


async def steps(a: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(a.url, migrate=True)
    try:
        t0 = time.perf_counter()
        view = await run_pipeline(store, P.many, n=a.n)
        dt = time.perf_counter() - t0
        assert view.status == "completed", view.error
    finally:
        await store.close()
    return {"us_per_step": dt / a.n * 1e6}


async def throughput(a: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(a.url, migrate=True)
    client = dp.Client(store)
    workers = runner = serving = None
    try:
        if a.workers:
            workers = Workers(a.url, a.workers)
            await workers.ready(store)
        else:  # a Runner in this process, serving as `durapipe worker` does
            runner = Runner(store, kind="worker", pipelines=[P.three])
            await runner.start()
            serving = asyncio.ensure_future(runner.serve(runner.claim_filter()))
        t0 = time.time()
        await start_many(client, P.three, a.runs)
        await wait_done(store, a.runs, timeout=600)
        ((end,),) = await sql(store, "SELECT max(finished_at) FROM durapipe_runs")
    finally:
        if runner is not None:
            runner._stopping = True
            runner._wake.set()
            if serving is not None:
                await serving
            await runner.shutdown(grace=5)
            await runner.close()
        if workers is not None:
            workers.stop()
        await store.close()
    return {"runs_per_s": a.runs / (end - t0), "seconds": end - t0}


async def build(a: argparse.Namespace) -> dict[str, Any]:
    """Record n steps of a run that then fails (so `resume` can continue it)."""
    os.environ["BENCH_FAIL_AT_END"] = "1"
    store = await open_store(a.url, migrate=True)
    try:
        view = await run_pipeline(store, P.many, n=a.n)
        assert view.status == "failed", view.status
    finally:
        await store.close()
    return {"run_id": view.run_id}


async def resume(a: argparse.Namespace) -> dict[str, Any]:
    """As bench/core.py resume_time: resume_run replays the n recorded steps, then finishes."""
    store = await open_store(a.url, migrate=True)
    try:
        t0 = time.time()
        view = await resume_run(store, P.many, a.run_id)
        t1 = time.time()
        assert view.status == "completed", view.error
    finally:
        await store.close()
    return {
        "seconds": t1 - t0,
        "replay_seconds": P.TIMES["looped"] - P.TIMES["entered"],
        "to_entry_seconds": P.TIMES["entered"] - t0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sleepers(a: argparse.Namespace) -> dict[str, Any]:
    """Runs that sleep, then run a step; delay = the step began - the wake time recorded.

    --sleep S: each run sleeps S seconds from when it first ran (due as they were started);
    --due-in D: the runs sleep until D seconds after the first start, spread evenly over
    --spread seconds (bench/wake.py: 10,000 due within one second)."""
    store = await open_store(a.url, migrate=True)
    client = dp.Client(store)
    workers = Workers(a.url, 1, "--suspend-after", str(a.suspend_after), *a.worker_arg)
    pid = workers.procs[0].pid
    idle = None
    try:
        await workers.ready(store)
        base = rss_mib(pid)
        with RssSampler(pid) as rss:
            t0 = time.time()
            if a.due_in is None:
                ids = await start_many(client, P.sleeper, a.runs, seconds=a.sleep)
            else:
                due = t0 + a.due_in
                ids = await bounded(
                    [
                        client.start(P.sleeper_until, at=due + a.spread * i / a.runs)
                        for i in range(a.runs)
                    ]
                )
            started = time.time() - t0
            if a.due_in is not None:  # all asleep (suspended) before the first is due?
                while time.time() < due - 0.5:
                    counts = await store.count_by_status()
                    if counts.get("sleeping", 0) >= a.runs:
                        break
                    await asyncio.sleep(0.1)
                counts = await store.count_by_status()
                asleep_before_due = counts.get("sleeping", 0)
                idle = rss_mib(pid)
            cpu0 = cpu_seconds(pid)
            await wait_done(store, a.runs, timeout=(a.due_in or a.sleep) + 600)
            cpu = cpu_seconds(pid) - cpu0
        rows = await sql(
            store,
            "SELECT r.id, r.output, e.at, e.data, f.at FROM durapipe_runs r JOIN durapipe_events e "
            "ON e.run_id = r.id AND e.kind = 'timer_started' "
            "JOIN durapipe_events f ON f.run_id = r.id AND f.kind = 'timer_fired'",
        )
    finally:
        workers.stop()
        await store.close()
    data = [
        (at, float(json.loads(d)["wake_at"]), float(json.loads(out))) for _, out, at, d, _f in rows
    ]
    assert len(data) == len(ids)
    # Where the delay went: due -> timer_fired written (claimed, history read, replayed to the
    # sleep, the event built) -> the step began (the timer_fired commit, the step's start).
    fired = [(float(f) - w) * 1000 for (_, w, _), (*_, f) in zip(data, rows, strict=True)]
    to_step = [(s - float(f)) * 1000 for (_, _, s), (*_, f) in zip(data, rows, strict=True)]
    wakes = sorted(w for _, w, _ in data)
    out = {
        **wake_stats(data),
        "fired_p50_ms": pct(fired, 50),
        "fired_p99_ms": pct(fired, 99),
        "step_p50_ms": pct(to_step, 50),
        "step_p99_ms": pct(to_step, 99),
        "due_span_s": wakes[-1] - wakes[0],
        "rss_peak_mib": rss.peak,
        "rss_base_mib": base,
        "start_s": started,
        "worker_cpu_s": cpu,  # from (--due-in: just before the first is due) to the last done
    }
    if a.due_in is not None:
        out.update(rss_idle_mib=idle, asleep_before_due=asleep_before_due)
    return out


async def kill(a: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the process running a run; time until the run's next step begins elsewhere.

    peer: two `durapipe worker --lease-ttl T` are running; the other one takes over once the
    lease expires. restart: `durapipe run` is killed and `durapipe resume RUN_ID` is started at
    once (it takes over a run whose owner is a dead process on this host without waiting)."""
    store = await open_store(a.url, migrate=True)
    client = dp.Client(store)
    workers = runner_proc = None
    try:
        if a.mode == "peer":
            workers = Workers(a.url, 2, "--lease-ttl", str(a.lease_ttl))
            await workers.ready(store)
            rid = await client.start(P.ticker, n=a.n, pause=a.pause)
        else:
            runner_proc = subprocess.Popen(  # noqa: ASYNC220 - a bench harness
                [*CLI, "run", f"{PIPES}:ticker", "--database-url", a.url,
                 "--input", f"n={a.n}", "--input", f"pause={a.pause}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_with_repo(),
            )  # fmt: skip
            assert runner_proc.stdout is not None
            rid = runner_proc.stdout.readline().strip()
        end = deadline(60)
        while time.monotonic() < end:
            ((done,),) = await sql(
                store,
                "SELECT count(*) FROM durapipe_events WHERE run_id = :r AND kind = 'step_completed'",
                r=rid,
            )
            if done >= a.kill_after:
                break
            await asyncio.sleep(0.02)
        else:
            raise TimeoutError("the run did not get going")
        row = await client.row(rid)
        victim = (
            runner_proc.pid if runner_proc else int((await store.get_worker(row.lease_owner)).pid)
        )
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        if runner_proc is not None:
            runner_proc.wait()
            subprocess.run(  # noqa: ASYNC221 - blocking on purpose: nothing else runs meanwhile
                [*CLI, "resume", rid, "--database-url", a.url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True,
                env=env_with_repo(),
            )  # fmt: skip
        stamps = await client.result(rid, timeout=120, poll=0.1)
    finally:
        if runner_proc is not None and runner_proc.poll() is None:
            runner_proc.kill()
        if workers is not None:
            workers.stop()
        await store.close()
    after = [s for s in stamps if s > t_kill]
    return {"seconds": min(after) - t_kill, "steps_before": len(stamps) - len(after)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["steps", "throughput", "build", "resume", "sleepers", "kill"])  # fmt: skip
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--sleep", type=float, default=10.0)
    ap.add_argument("--suspend-after", type=float, default=1.0)
    ap.add_argument("--due-in", type=float, default=None)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--worker-arg", action="append", default=[], help="passed to the worker")
    ap.add_argument("--mode", default="peer", choices=["peer", "restart"])
    ap.add_argument("--lease-ttl", type=float, default=2.0)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--kill-after", type=int, default=20)
    a = ap.parse_args()
    fn = {
        "steps": steps,
        "throughput": throughput,
        "build": build,
        "resume": resume,
        "sleepers": sleepers,
        "kill": kill,
    }[a.workload]
    emit(asyncio.run(fn(a)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
