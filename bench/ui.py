"""The web UI's server times with many runs, a long history, and the live log's latency.

python bench/ui.py [--db sqlite|postgresql|both] [--runs 1000000] [--steps 10000] [--repeat 40]

1. Bulk-inserts ``--runs`` runs (plain SQL here in bench/: COPY on PostgreSQL, executemany on
   SQLite), then times the runs page in the server (the ASGI app called in-process, rendering
   included): the first page, a page filtered by status, by pipeline, and a page deep in the
   list (keyset cursor), pages filtered by tags (every run has env=prod or env=dev; one in
   1,000 team=blue); p50/p99 over ``--repeat`` requests.
2. Inserts a run with a ``--steps``-step history and times its run page.
3. Starts a worker and ``durapipe ui``, runs a pipeline whose command prints a line every 100 ms
   with the time it printed it, and reads the run's log stream (server-sent events) as the
   browser does: latency = arrival of the line - its print time.
PostgreSQL: DURAPIPE_TEST_PG_URL (a server whose user may create databases).
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
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bulk  # noqa: E402

PIPELINES = ["deploy", "build", "nightly", "backfill", "report"]
STATUSES = ["completed"] * 90 + ["failed"] * 4 + ["waiting"] * 3 + ["sleeping"] * 2 + ["cancelled"]
COLS = bulk.RUN_COLS

PRINTER = """
import time
for i in range(30):
    print(f"tick {time.time():.6f}", flush=True)
    time.sleep(0.1)
"""
PIPE = f"""
import sys
import durapipe as dp

@dp.pipeline(name="printer", version="1")
async def printer() -> None:
    await dp.exec(sys.executable, "-c", {PRINTER!r})
"""


def tags(n: int) -> Any:
    """Every run has env=prod or env=dev; one in 1,000 also team=blue."""
    for i in range(n):
        rid = f"run_b{i:019d}"
        yield (rid, "env", "prod" if i % 2 else "dev")
        if i % 1000 == 0:
            yield (rid, "team", "blue")


def rows(n: int, start: float) -> Any:
    rnd = random.Random(7)
    for i in range(n):
        at = start + i * 0.01
        rid = f"run_b{i:019d}"
        pipeline = PIPELINES[rnd.randrange(len(PIPELINES))]
        status = STATUSES[rnd.randrange(len(STATUSES))]
        yield (
            rid, pipeline, "1", "bench.py:" + pipeline, False, status, '{"n": 1}',
            '{"ok": true}' if status == "completed" else None, rid, 0, pipeline, at, at + 1,
            at + 1 if status in ("completed", "failed", "cancelled") else None, 1,
        )  # fmt: skip


async def load(url: str, n: int, steps: int) -> str:
    """Fill the database; -> the id of the long run."""
    await bulk.migrate(url)
    start = time.time() - n * 0.01 - 3600
    long_id = "run_long_history"
    long_run = (long_id, "long", "1", "bench.py:long", False, "completed", "{}", "1", long_id, 0,
                "long", start - 1, start - 1, start - 1, 1)  # fmt: skip
    secs = await bulk.load(
        url,
        [
            ("durapipe_runs", COLS, rows(n, start)),
            ("durapipe_runs", COLS, [long_run]),
            ("durapipe_tags", bulk.TAG_COLS, tags(n)),
            ("durapipe_events", bulk.EVENT_COLS, events(long_id, steps)),
        ],
    )
    print(f"  loaded {n:,} runs and a {steps:,}-step run in {secs:.1f}s")
    return long_id


def events(run_id: str, steps: int) -> list[tuple[Any, ...]]:
    now = time.time() - steps * 0.001
    out: list[tuple[Any, ...]] = [
        (run_id, 1, "run_started", None, "long", None, now, 1, '{"inputs": {}}')
    ]
    for i in range(1, steps + 1):
        out.append(
            (run_id, i + 1, "step_completed", str(i), "work", f"work_{i}", now + i * 0.001, 1,
             json.dumps({"result": {"i": i, "rows": i * 3}}))
        )  # fmt: skip
    out.append((run_id, steps + 2, "run_completed", None, None, None, now + steps * 0.001, 1, "1"))
    return out


async def call(app: Any, path: str, query: str = "") -> tuple[int, float, int]:
    """One GET through the ASGI app, in-process: -> (status, seconds, bytes)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1), "server": ("bench", 80),
    }  # fmt: skip
    got: dict[str, Any] = {"size": 0}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            got["status"] = message["status"]
        elif message["type"] == "http.response.body":
            got["size"] += len(message.get("body", b""))

    t0 = time.perf_counter()
    await app(scope, receive, send)
    return got["status"], time.perf_counter() - t0, got["size"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def pages(url: str, long_id: str, repeat: int) -> list[tuple[str, float, float, int]]:
    from durapipe._client import AdminClient
    from durapipe._ui.app import create_app

    out = []
    async with await AdminClient.open(url) as client:
        app = create_app(client)
        first = await client.page(limit=1000)
        steps = len(await client.history(long_id)) - 2
        cursor = f"{first[-1].created_at!r}~{first[-1].id}"
        cases = [
            ("runs, first page", "/runs", ""),
            ("runs, counts by status (apart)", "/runs", "counts=1"),
            ("runs, status=failed", "/runs", "status=failed"),
            ("runs, pipeline=nightly", "/runs", "pipeline=nightly"),
            ("runs, page 21 (keyset)", "/runs", "before=" + urllib.parse.quote(cursor)),
            ("runs, tag env=prod (1 in 2)", "/runs", "tag=env%3Dprod"),
            ("runs, tag team=blue (1 in 1,000)", "/runs", "tag=team%3Dblue"),
            ("runs, both tags", "/runs", "tag=team%3Dblue+env%3Ddev"),
            ("runs, a tag no run has", "/runs", "tag=team%3Dnobody"),
            ("runs, last hour (since)", "/runs", "since=" + time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 7200))),
            (f"run page, {steps:,} steps (first 1,000)", f"/runs/{long_id}", ""),
            (f"run page, {steps:,} steps (all)", f"/runs/{long_id}", "steps=all"),
        ]  # fmt: skip
        for name, path, query in cases:
            times = []
            size = 0
            for _ in range(repeat):
                status, secs, size = await call(app, path, query)
                assert status == 200, (name, status)
                times.append(secs)
            out.append((name, pct(times, 50), pct(times, 99), size))
    return out


def log_latency(url: str) -> list[float]:
    work = Path(tempfile.mkdtemp())
    (work / "printer.py").write_text(PIPE)
    env = {**os.environ, "DURAPIPE_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "durapipe", "worker", "-m", str(work / "printer.py")], env=env, cwd=work),
        subprocess.Popen([sys.executable, "-m", "durapipe", "ui", "--port", "0"], env=env, cwd=work, stdout=subprocess.PIPE, text=True),
    ]  # fmt: skip
    try:
        base = procs[1].stdout.readline().split()[2]  # type: ignore[union-attr]
        rid = subprocess.run(
            [sys.executable, "-m", "durapipe", "start", str(work / "printer.py") + ":printer"],
            env=env, cwd=work, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        lat: list[float] = []
        with urllib.request.urlopen(f"{base}runs/{rid}/logs", timeout=60) as res:
            for raw in res:
                line = raw.decode()
                if line.startswith("event: end"):
                    break
                if not line.startswith("data: "):
                    continue
                now = time.time()
                for rec in json.loads(line[6:]):
                    if rec["l"].startswith("tick "):
                        lat.append(now - float(rec["l"].split()[1]))
                if len(lat) >= 30:
                    break
        return lat
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="both", choices=["sqlite", "postgresql", "both"])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=40)
    a = ap.parse_args()
    for db in ["sqlite", "postgresql"] if a.db == "both" else [a.db]:
        print(f"{db}:")
        drop = None
        if db == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/ui.db"
        else:
            from durapipe._store import create_database, drop_database

            server = os.environ["DURAPIPE_TEST_PG_URL"]
            name = "dp_bench_ui_" + uuid.uuid4().hex[:8]
            asyncio.run(create_database(server, name))
            url = server.rsplit("/", 1)[0] + "/" + name
            drop = (server, name)
        try:
            long_id = asyncio.run(load(url, a.runs, a.steps))
            for name, p50, p99, size in asyncio.run(pages(url, long_id, a.repeat)):
                print(
                    f"  {name:32} p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms   {size / 1024:8.0f} KiB"
                )
            lat = log_latency(url)
            print(
                f"  live log, print -> stream       p50 {statistics.median(lat) * 1000:8.1f} ms   "
                f"p99 {pct(lat, 99) * 1000:8.1f} ms   ({len(lat)} lines)"
            )
        finally:
            if drop:
                asyncio.run(drop_database(*drop))


if __name__ == "__main__":
    import urllib.parse

    main()
