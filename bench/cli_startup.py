"""Wall time of the `durapipe` commands that answer at once (issue #21 item 5).

    python bench/cli_startup.py [--runs 20] [--db sqlite --db postgresql] [--md FILE]
        [--repo LABEL=PATH ...] [--json OUT] [--importtime]

Measures each command as a user types it, in a fresh process from spawn to exit: ``--help``,
``show --help``, ``show RUN``, ``list``, ``input RUN NAME VALUE`` (each time on another run
suspended in ``dp.await_input``), ``result RUN``; on SQLite (the default: a file, WAL,
synchronous=FULL) and on PostgreSQL (a throwaway cluster with fsync=on and
synchronous_commit=on from tests/pgcluster.py, or DURAPIPE_BENCH_PG_URL). Wall time median and
p90 of ``--runs`` runs after one warm-up run (which writes the .pyc files: a warm machine), and
the median CPU time of the process (user + system), which moves less when other work shares
the machine. Started two ways: ``python -m durapipe`` and the ``durapipe`` console script
(pyproject's ``[project.scripts] durapipe = "durapipe.cli:main"``, the script pip writes in the
interpreter's bin/); when ``durapipe`` on PATH is something else (a pyenv shim), one more row
shows what it adds to ``--help``. Floors for reference: ``python -c pass``, ``import durapipe``.

``--repo LABEL=PATH`` (repeatable) measures several checkouts side by side, e.g. the code
before a change (``git archive COMMIT | tar -x -C /tmp/before``) and this tree: each side gets a
database of its own seeded by its own code (40 completed runs of a 3-step pipeline and
2 x (runs + 1) + 1 runs suspended waiting for input: a ``durapipe worker --suspend-after 0.2``
runs them, then is stopped), and the sides take turns run by run, so a burst of other work on
the machine hits them alike. ``--importtime`` adds the top cumulative entries of
``python -X importtime -m durapipe --help`` per side.

Takes about 2 minutes per database and side with ``--runs 20`` on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import pct  # noqa: E402

TARGETS = {"--help": 150, "show --help": 150, "show": 200, "list": 200, "input": 200, "result": 200}

PIPES = """
import durapipe as dp


@dp.step
async def fetch(n: int) -> int:
    return n + 1


@dp.step
def double(n: int) -> int:
    return n * 2


@dp.pipeline(version="1")
async def hello(n: int = 1) -> dict:
    a = await fetch(n)
    b = await double(a)
    c = await fetch(b)
    return {"n": n, "out": c}


@dp.pipeline(version="1")
async def approve() -> str:
    ok = await dp.await_input("ok", prompt="Go?")
    return f"answered {ok}"
"""

SEED = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import durapipe as dp
import cli_bench_pipes as P

async def seed(url, done, waiting):
    async with await dp.Client.connect(url, migrate=True) as c:
        for i in range(done):
            await c.start(P.hello, n=i)
        for _ in range(waiting):
            await c.start(P.approve)

asyncio.run(seed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def env_for(repo: Path, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURAPIPE_", "OTEL_"))}
    # A warm machine has the .pyc files: the warm-up run writes them (this sandbox sets
    # PYTHONDONTWRITEBYTECODE, which would compile every module of the checkout on each run).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(repo)
    if url is not None:
        env["DURAPIPE_DATABASE_URL"] = url
    return env


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def list_runs(py: list[str], env: dict[str, str], cwd: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*py, "list", "--json", "--limit", "1000"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"list failed: {out.stderr}")
    runs: list[dict[str, Any]] = json.loads(out.stdout)
    return runs


def seed(repo: Path, url: str, work: str, done: int, waiting: int) -> dict[str, Any]:
    """Runs to look at: completed ones, and ones suspended in dp.await_input."""
    env = env_for(repo, url)
    py = [sys.executable, "-m", "durapipe"]
    subprocess.run(
        [sys.executable, "-c", SEED, work, url, str(done), str(waiting)], env=env, check=True
    )
    worker = subprocess.Popen(
        [*py, "worker", "-m", f"{work}/cli_bench_pipes.py", "--suspend-after", "0.2"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            runs = list_runs(py, env, work)
            n_done = sum(r["status"] == "completed" for r in runs)
            n_wait = sum(r["status"] == "waiting" for r in runs)
            if n_done == done and n_wait == waiting:
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"seeding did not finish: {n_done}/{done} done, {n_wait}/{waiting}"
                )
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)  # it releases what it holds on the way out
        worker.wait(timeout=60)
    runs = list_runs(py, env, work)
    completed = [r["run_id"] for r in runs if r["status"] == "completed"]
    waiting_ids = [r["run_id"] for r in runs if r["status"] == "waiting"]
    return {"completed": completed, "waiting": waiting_ids}


def time_one(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall ms, CPU ms of the child) of one run of ``argv``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = (time.perf_counter() - t0) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} -> {out.returncode}: {out.stderr.decode()}")
    return wall, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000


def measure(cases: list[tuple[Any, dict[str, str]]], cwd: str, runs: int) -> list[dict[str, Any]]:
    """Each case is (argv_of, env), argv_of(i) the i-th command line (i = -1: the warm-up).
    The cases take turns, run by run."""
    for argv_of, env in cases:
        time_one(argv_of(-1), env, cwd)
    samples: list[list[tuple[float, float]]] = [[] for _ in cases]
    for i in range(runs):
        for k, (argv_of, env) in enumerate(cases):
            samples[k].append(time_one(argv_of(i), env, cwd))
    out = []
    for got in samples:
        wall, cpu = [w for w, _ in got], [c for _, c in got]
        out.append(
            {
                "median": statistics.median(wall),
                "p90": pct(wall, 90),
                "cpu": statistics.median(cpu),
                "all": wall,
            }
        )
    return out


def launchers() -> dict[str, list[str]]:
    """How `durapipe` is started: -m, the console script, and PATH's durapipe when it differs
    (here a pyenv shim: a bash script that finds the interpreter first)."""
    out = {"python -m durapipe": [sys.executable, "-m", "durapipe"]}
    script = Path(sys.executable).parent / "durapipe"
    if script.exists():
        out["durapipe (console script)"] = [str(script)]
    shim = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "shims", "durapipe")
    on_path = str(shim) if shim.exists() else shutil.which("durapipe")
    if on_path and script.exists() and Path(on_path).resolve() != script.resolve():
        out[f"`durapipe` on PATH: {on_path}"] = [on_path]
    return out


def by_side(sides: list[tuple[str, Path]], got: list[dict[str, Any]]) -> dict[str, Any]:
    return {label: r for (label, _), r in zip(sides, got, strict=True)}


def bench_db(
    url_of: Any, sides: list[tuple[str, Path]], runs: int, work: str, how: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """show / list / input / result; each side on a database of its own, seeded by its code."""
    ctx = []
    for i, (_, repo) in enumerate(sides):
        url = url_of(i)
        seeded = seed(repo, url, work, done=40, waiting=2 * (runs + 1) + 1)
        ctx.append((env_for(repo, url), seeded["completed"][0], iter(seeded["waiting"])))
    commands: dict[str, Any] = {
        "show": lambda p, run, waiting: lambda i: [*p, "show", run],
        "list": lambda p, run, waiting: lambda i: [*p, "list"],
        "input": lambda p, run, waiting: lambda i: [*p, "input", next(waiting), "ok", "true"],
        "result": lambda p, run, waiting: lambda i: [*p, "result", run],
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, pre in how.items():
        if "PATH" in name:
            continue  # what the shim adds is measured once, on --help
        for cmd, make in commands.items():
            cases = [(make(pre, run, waiting), env) for env, run, waiting in ctx]
            rows[f"{cmd} | {name}"] = by_side(sides, measure(cases, work, runs))
    return rows


def bench_no_db(
    sides: list[tuple[str, Path]], runs: int, work: str, how: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    envs = [env_for(repo, None) for _, repo in sides]
    py = [sys.executable]
    rows: dict[str, dict[str, Any]] = {}

    def row(key: str, argv_of: Any) -> None:
        rows[key] = by_side(sides, measure([(argv_of, env) for env in envs], work, runs))

    row("python -c pass | floor", lambda i: [*py, "-c", "pass"])
    row("import durapipe | floor", lambda i: [*py, "-c", "import durapipe"])
    for name, pre in how.items():
        row(f"--help | {name}", lambda i, p=pre: [*p, "--help"])
        if "PATH" not in name:
            row(f"show --help | {name}", lambda i, p=pre: [*p, "show", "--help"])
    return rows


def importtime_top(repo: Path, work: str, argv: list[str], n: int = 12) -> list[tuple[str, int]]:
    """The top-level imports (as -X importtime nests them) by cumulative µs."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "durapipe", *argv],
        env=env_for(repo, None),
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, raw = line.split("|")
        depth = (len(raw) - len(raw.lstrip()) - 1) // 2  # " name" at the top, 2 more a level
        name = raw.strip()
        if depth == 0 and name != "site":  # site: the interpreter's, before ours
            rows.append((name, int(cum)))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


def git_rev(repo: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"


def markdown(results: dict[str, Any]) -> str:
    """The figures as a markdown section: one column per side (e.g. before / after)."""
    m = results["meta"]
    sides = [label for label, _ in m["sides"]]
    lines = [
        "## CLI start-up: commands that answer at once (issue #21)",
        "",
        f"Command: `{m['command']}`",
        "",
        f"- date (UTC): {m['date']}; python {m['python']}; "
        + "; ".join(f"**{label}**: {code}" for label, code in m["sides"]),
        f"- load average at start / end (1/5/15 min): {m['load_start']} / {m['load_end']}"
        " (2 cores: above 2, other work was running too)",
        "- SQLite: a file in WAL mode, synchronous=FULL (durapipe's default); PostgreSQL: "
        f"{m.get('pg', 'not measured')}",
        f"- each cell: wall ms from spawn to exit, median / p90 of {m['runs']} runs after a "
        "warm-up run (which writes the .pyc files), and the median CPU ms of the process "
        "(user + system); the sides take turns run by run. Each side has a database of its "
        "own with 40 completed 3-step runs and the runs waiting in `dp.await_input` that "
        "`input` answers (another one each time).",
        "",
    ]
    header = "| database | command | started as | target | " + " | ".join(sides) + " |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for db, rows in results["rows"].items():
        for key, got in rows.items():
            cmd, how = key.split(" | ", 1)
            target = f"≤ {TARGETS[cmd]}" if cmd in TARGETS and "PATH" not in how else ""
            cells = [
                f"{r['median']:.0f} / {r['p90']:.0f} (cpu {r['cpu']:.0f})"
                for r in (got[s] for s in sides)
            ]
            lines.append(f"| {db} | `{cmd}` | {how} | {target} | " + " | ".join(cells) + " |")
    for label in sides:
        top = results.get("importtime", {}).get(label)
        if not top:
            continue
        lines += [
            "",
            f"Top-level imports of `python -X importtime -m durapipe --help`, {label} "
            "(cumulative ms, -X importtime's own overhead included):",
            "",
            "| module | ms |",
            "|---|---|",
        ]
        lines += [f"| `{name}` | {us / 1000:.1f} |" for name, us in top]
    return "\n".join(lines) + "\n"


async def _pg_database(server: str) -> str:
    from durapipe._store import create_database

    name = f"clibench_{uuid.uuid4().hex[:8]}"
    await create_database(server, name)
    return server.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument(
        "--repo",
        action="append",
        help="LABEL=PATH: a checkout to measure (repeatable; default: this tree)",
    )
    ap.add_argument("--md", help="write the markdown section to this file")
    ap.add_argument("--json", help="write the figures as JSON to this file")
    ap.add_argument("--importtime", action="store_true")
    a = ap.parse_args()
    dbs = a.db or ["sqlite", "postgresql"]
    sides: list[tuple[str, Path]] = []
    for spec in a.repo or [f"this tree={ROOT}"]:
        label, _, path = spec.rpartition("=")
        sides.append((label or path, Path(path).resolve()))
    how = launchers()
    meta: dict[str, Any] = {
        "command": "python bench/cli_startup.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "sides": [(label, f"`{repo}` at {git_rev(repo)}") for label, repo in sides],
        "python": sys.version.split()[0],
        "runs": a.runs,
        "load_start": loadavg(),
    }
    # SIGTERM ends the run through `finally`: the PostgreSQL cluster is stopped, not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {"meta": meta, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="clibench") as work:
        Path(work, "cli_bench_pipes.py").write_text(PIPES)
        results["rows"]["—"] = bench_no_db(sides, a.runs, work, how)
        for db in dbs:
            if db == "sqlite":
                results["rows"][db] = bench_db(
                    lambda i: f"sqlite:///{work}/bench{i}.db", sides, a.runs, work, how
                )
                continue
            from core import pg_url

            server, cluster = pg_url()
            try:
                urls = [asyncio.run(_pg_database(server)) for _ in sides]
                meta["pg"] = (
                    "DURAPIPE_BENCH_PG_URL"
                    if cluster is None
                    else "throwaway local cluster (tests/pgcluster.py), fsync=on, synchronous_commit=on"
                )
                results["rows"][db] = bench_db(urls.__getitem__, sides, a.runs, work, how)
            finally:
                if cluster is not None:
                    cluster.stop()
        if a.importtime:
            results["importtime"] = {
                label: importtime_top(repo, work, ["--help"]) for label, repo in sides
            }
    meta["load_end"] = loadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    md = markdown(results)
    if a.md:
        Path(a.md).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
