"""An exec printing 100,000 lines: durapipe's run vs the raw command, time and peak memory.

    python bench/exec_output.py [--lines 100000] [--reps 5] [--db sqlite|postgresql] [--tty]

Two commands, each run raw and as the only step of a pipeline (`durapipe run`):

- burst: `seq 1 N`, which writes its 100,000 lines into the pipe as fast as the pipe takes them
  (about 0.6 MB in a few ms); the worst case for durapipe, which formats, prints and stores
  every line.
- line by line: a Python loop printing a build-log-like line and flushing it, as a build or a
  test runner writing to a log does.

Both the raw command and `durapipe run` write to a pipe that this script drains (as a CI log or
`| tee` would); with --tty, to a pseudo-terminal instead (as at a terminal: the raw command's
stdout is line-buffered there, and durapipe prints every chunk at once). The figures:

- raw: the raw command's wall time, from spawn to exit with all its output read.
- exec step: the step's own duration as durapipe records it (the `duration` in its result):
  from spawning the command until it exited with every line read, formatted, printed and handed
  to the journal (plus the commit of `step_started`). This is the figure compared with raw: the
  issue's "within 2x of the raw command".
- run: the whole `durapipe run` wall time, and a 1-line run of the same pipeline: the fixed cost
  (interpreter start, imports, opening the database, creating and finishing the run). run minus
  the 1-line run is what the lines cost end to end: the command's own time, and storing the
  lines (most ride with the step's completion, after the exec step's duration is taken).
- peak RSS of the `durapipe run` process (wait4), also for a run 10x longer: bounded memory means
  it does not grow with the output.

PostgreSQL comes from DURAPIPE_BENCH_PG_URL (a user who may create databases), or a throwaway
cluster (tests/pgcluster.py).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PIPELINE = """
import sys
import durapipe as dp

@dp.pipeline(version="1")
async def burst(lines: int) -> int:
    res = await dp.exec("seq", "1", str(lines))
    return res.exit_code

@dp.pipeline(version="1")
async def line_by_line(lines: int) -> int:
    res = await dp.exec(sys.executable, "producer.py", str(lines))
    return res.exit_code
"""

PRODUCER = """
import sys

n = int(sys.argv[1])
for i in range(1, n + 1):
    print(f"[{i:>6}/{n}] CC src/unit_{i % 997:03}.o", flush=True)
"""


TTY = {"on": False}  # --tty: stdout is a pseudo-terminal (drained here) instead of a pipe


def drained(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, bytes]:
    """Run cmd with stdout and stderr read to the end and dropped -> (seconds, peak RSS MiB of
    cmd, the start of its stdout). Nothing is kept here: a child's peak RSS as Linux reports it
    includes this process's size at the fork."""
    t0 = time.perf_counter()
    if TTY["on"]:
        master, slave = os.openpty()
        p = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE
        )
        os.close(slave)
        out: Any = os.fdopen(master, "rb", buffering=0)
    else:
        p = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out = p.stdout
    assert out is not None and p.stderr is not None
    head = b""
    err = b""
    sel = selectors.DefaultSelector()
    sel.register(out, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    while sel.get_map():
        for key, _ in sel.select():
            try:
                data = os.read(key.fd, 1 << 16)
            except OSError:  # EIO: the terminal's other side is closed
                data = b""
            if not data:
                sel.unregister(key.fileobj)
            elif key.data == "out" and len(head) < 4096:
                head += data
            elif key.data == "err":
                err = (err + data)[-4096:]
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    out.close()
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed ({p.returncode}): {err.decode(errors='replace')}")
    return dt, usage.ru_maxrss / 1024, head.replace(b"\r\n", b"\n")


def count_lines(cmd: list[str], env: dict[str, str], cwd: str) -> int:
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        n = sum(chunk.count(b"\n") for chunk in iter(lambda: p.stdout.read(1 << 16), b""))  # type: ignore[union-attr]
    assert p.returncode == 0, cmd
    return n


def cli(env: dict[str, str], cwd: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "durapipe", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def step_duration(env: dict[str, str], cwd: str, run_id: str) -> float:
    doc = json.loads(cli(env, cwd, "show", run_id, "--json"))
    done = [e for e in doc["events"] if e["kind"] == "step_completed" and e["name"] == "exec"]
    return float(done[0]["data"]["result"]["duration"])


def durapipe_run(
    env: dict[str, str], cwd: str, name: str, lines: int
) -> tuple[float, float, float, str]:
    """-> (run seconds, exec step seconds, peak RSS MiB, run id)."""
    cmd = [sys.executable, "-m", "durapipe", "run", f"loud.py:{name}", "--input", f"lines={lines}"]
    dt, rss, out = drained(cmd, env, cwd)
    run_id = out.split(b"\n", 1)[0].decode()
    return dt, step_duration(env, cwd, run_id), rss, run_id


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x >= 0.0995 else f"{x * 1000:.1f} ms"


def database(kind: str, work: str) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{work}/bench.db", None
    url = os.environ.get("DURAPIPE_BENCH_PG_URL")
    cluster = None
    if not url:
        from pgcluster import PgCluster

        cluster = PgCluster(durable=True)
        url = cluster.start()
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP DATABASE IF EXISTS durapipe_bench_exec")
            await conn.execute("CREATE DATABASE durapipe_bench_exec")
        finally:
            await conn.close()

    asyncio.run(create())
    return url.rsplit("/", 1)[0] + "/durapipe_bench_exec", cluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--tty", action="store_true", help="stdout a pseudo-terminal, not a pipe")
    a = ap.parse_args()
    TTY["on"] = a.tty
    work = tempfile.mkdtemp()
    Path(work, "loud.py").write_text(PIPELINE)
    Path(work, "producer.py").write_text(PRODUCER)
    url, cluster = database(a.db, work)
    env = dict(os.environ, DURAPIPE_DATABASE_URL=url, NO_COLOR="1", PYTHONPATH=str(ROOT))
    env.pop("FORCE_COLOR", None)
    try:
        if a.db == "postgresql":
            cli(env, work, "db", "upgrade")
        n = a.lines
        drain = "a pseudo-terminal" if a.tty else "a pipe"
        print(f"{n:,} lines, {a.db}, stdout to {drain}, median of {a.reps} (min-max)")
        workloads = [
            ("burst", f"seq 1 {n}", ["seq", "1", str(n)]),
            (
                "line_by_line",
                f"python producer.py {n} (print, flush=True)",
                [sys.executable, "producer.py", str(n)],
            ),
        ]
        for name, shown, raw_cmd in workloads:
            raw, step, run, rss, idle, idle_step, idle_rss = [], [], [], [], [], [], []
            for _ in range(a.reps):  # interleaved, so load on the machine hits all alike
                raw.append(drained(raw_cmd, env, work)[0])
                dt, st, peak, run_id = durapipe_run(env, work, name, n)
                run.append(dt)
                step.append(st)
                rss.append(peak)
                dt1, st1, peak1, _ = durapipe_run(env, work, name, 1)
                idle.append(dt1)
                idle_step.append(st1)
                idle_rss.append(peak1)
            logged = count_lines([sys.executable, "-m", "durapipe", "logs", run_id], env, work)
            assert logged == n + 2, f"durapipe logs shows {logged} lines, expected {n} + 2"
            big = durapipe_run(env, work, name, 10 * n) if name == "burst" else None

            def fig(xs: list[float]) -> str:
                return f"{ms(statistics.median(xs))} ({ms(min(xs))}-{ms(max(xs))})"

            med_raw, med_step = statistics.median(raw), statistics.median(step)
            marginal = statistics.median(run) - statistics.median(idle)
            print(f"\n{name}: `{shown}`")
            print(f"  raw command                  {fig(raw)}")
            print(f"  durapipe exec step           {fig(step)}   = {med_step / med_raw:.2f}x raw")
            print(
                f"  durapipe exec step, 1 line   {fig(idle_step)}   (spawn, and the commit of step_started)"
            )
            print(f"  durapipe run, {n:,} lines   {fig(run)}")
            print(
                f"  durapipe run, 1 line         {fig(idle)}   (fixed cost: start-up, database, run)"
            )
            print(
                f"  run minus 1-line run         {ms(marginal)} = {marginal / n * 1e6:.2f} µs per line "
                "(the command's own time included)"
            )
            print(
                f"  peak RSS                     {statistics.median(rss):.0f} MiB ({n:,} lines), "
                f"{statistics.median(idle_rss):.0f} MiB (1 line)"
                + (f", {big[2]:.0f} MiB ({10 * n:,} lines, exec step {ms(big[1])})" if big else "")
            )
            print(f"  `durapipe logs` shows all {n:,} lines (+ the command and its exit line)")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
