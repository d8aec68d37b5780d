"""Queues: claim throughput with a global limit, unqueued claims, and the claim's plan.

    python bench/queues.py --pg-url postgresql://user@host:port/postgres [--runs 2000]
    python bench/queues.py --pg-url URL --only unqueued --repo /path/to/another/checkout
    python bench/queues.py --pg-url URL --only throughput --dbos --runs 1000 --reps 2

Each part creates a database of its own on the server (the user must be able to create them)
and prints its figures; bench/README.md keeps them.

* throughput: ``--runs`` trivial runs on a queue with ``concurrency=50``, then as many without a
  queue, each drained by 4 ``durapipe worker`` processes: runs/s from the first start to the last
  finish. With ``--dbos``, DBOS as well (bench/dbos_queue.py): as many trivial workflows
  enqueued on a DBOS queue with ``concurrency=50`` and drained by 4 DBOS worker processes, then
  on a DBOS queue without a limit (DBOS has no other way for separate processes to take
  workflows); the four measurements alternate, ``--reps`` times.
* unqueued: the time of one claim of one pending run (10 × 200 claims), with no queue, and with
  a queue of 100,000 waiting runs whose limit is reached (a claim still looks at it). With
  ``--repo`` the same is measured on another checkout (e.g. main, which has no queues).
* plan: EXPLAIN ANALYZE of every statement of a claim with 100,000 runs waiting in one queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _path(repo: str | None) -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, repo or str(HERE.parent))


async def _fresh_db(server: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


async def _fill_queue(store: Any, n: int, *, queue: str, running: int = 0) -> None:
    """``n`` runs waiting in ``queue`` (and ``running`` of it holding slots), in bulk."""
    from sqlalchemy import text

    def tx(conn: Any) -> None:
        conn.execute(
            text(
                "INSERT INTO durapipe_runs (id, pipeline, version, entrypoint, pinned, status,"
                " inputs, root_run_id, depth, prefix, created_at, updated_at, attempt, queue,"
                " priority, dequeued_at)"
                " SELECT 'q' || g, 'trivial', 'v', 'x', false,"
                " CASE WHEN g <= :running THEN 'running' ELSE 'queued' END,"
                " '{}', 'q' || g, 0, 'trivial', g, g, 0, :queue, 0,"
                " CASE WHEN g <= :running THEN g ELSE NULL END"
                " FROM generate_series(1, :n) g"
            ),
            {"n": n + running, "queue": queue, "running": running},
        )
        conn.execute(text("ANALYZE durapipe_runs"))

    await store._write(tx)


# ------------------------------------------------------------------ throughput


async def _drain(url: str, runs: int, queued: bool) -> float:
    import dp_queue_pipelines as P
    from sqlalchemy import text

    import durapipe as dp
    from durapipe._store import open_store

    store = await open_store(url, migrate=True)
    client = dp.Client(store)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), DURAPIPE_POLL_INTERVAL="0.5")
    cmd = [sys.executable, "-m", "durapipe", "worker", "-m", str(HERE / "dp_queue_pipelines.py")]
    cmd += ["--database-url", url, "--concurrency", "100"]
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - started once, not awaited
        for _ in range(4)
    ]
    try:
        await asyncio.sleep(3)  # let them start (not timed)
        t0 = time.time()
        for i in range(0, runs, 100):
            await asyncio.gather(
                *(
                    client.start(P.trivial, queue=P.q50 if queued else None)
                    for _ in range(min(100, runs - i))
                )
            )

        def done(conn: Any) -> Any:
            return conn.execute(
                text(
                    "SELECT count(*), max(finished_at) FROM durapipe_runs WHERE status = 'completed'"
                )
            ).one()

        while True:
            n, end = await store.run_read(done)
            if n >= runs:
                return runs / (end - t0)
            await asyncio.sleep(0.2)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        await store.close()


async def _dbos_drain(url: str, runs: int, concurrency: int) -> float:
    """The same on DBOS (bench/dbos_queue.py, in a process of its own): runs/s."""
    cmd = [sys.executable, str(HERE / "dbos_queue.py"), "drive", "--url", url]
    cmd += ["--runs", str(runs), "--concurrency", str(concurrency)]
    p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"bench/dbos_queue.py failed ({p.returncode})")
    line = next(x for x in out.decode().splitlines() if x.startswith("RESULT "))
    return float(json.loads(line[len("RESULT ") :])["runs_per_s"])


async def throughput(server: str, runs: int, reps: int, dbos: bool) -> None:
    """durapipe queued, DBOS queued, durapipe unqueued, DBOS no limit: interleaved, ``reps``
    times; a fresh database for each measurement."""
    got: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        got.setdefault(key, []).append(value)
        print(f"  {key}: {value:.1f} runs/s", flush=True)

    for _ in range(reps):
        add("durapipe, queue (concurrency=50)",
            await _drain(await _fresh_db(server, "bench_q_queued"), runs, True))  # fmt: skip
        if dbos:
            add("DBOS, queue (concurrency=50)",
                await _dbos_drain(await _fresh_db(server, "bench_q_dbos50"), runs, 50))  # fmt: skip
        add("durapipe, no queue",
            await _drain(await _fresh_db(server, "bench_q_plain"), runs, False))  # fmt: skip
        if dbos:
            add("DBOS, queue without a limit",
                await _dbos_drain(await _fresh_db(server, "bench_q_dbos_nolimit"), runs, 0))  # fmt: skip
    print(f"throughput, 4 workers, {runs} trivial runs ({reps} repetitions, runs/s):")
    for key, values in got.items():
        print(f"  {key}: " + ", ".join(f"{v:.0f}" for v in values))


# ------------------------------------------------------------------ unqueued claims


async def _claims(url: str, *, with_queue: bool) -> list[float]:
    import durapipe as dp
    from durapipe._definition import load_target
    from durapipe._store import open_store
    from durapipe._store.store import ClaimFilter

    store = await open_store(url, migrate=True)
    pdef = load_target(str(HERE / "dp_queue_pipelines.py") + ":trivial")
    try:
        if with_queue:
            await dp.Client(store).start(pdef, queue="q50")  # declares it
            await _fill_queue(store, 100_000, queue="q50", running=50)
        client = dp.Client(store)
        per: list[float] = []
        for _ in range(10):
            await asyncio.gather(*(client.start(pdef) for _ in range(200)))
            t0 = time.perf_counter()
            for _ in range(200):
                got = await store.claim(
                    owner="bench", flt=ClaimFilter(), limit=1, ttl=30, now=time.time()
                )
                assert len(got.rows) == 1
            per.append((time.perf_counter() - t0) / 200 * 1e6)
        return per
    finally:
        await store.close()


async def unqueued(server: str, repo: str | None) -> None:
    label = repo or "this checkout"
    plain = await _claims(await _fresh_db(server, "bench_q_claim"), with_queue=False)
    print(f"unqueued claim ({label}), no queues: median {statistics.median(plain):.0f} µs")
    try:
        import durapipe._queues  # noqa: F401
    except ImportError:
        return
    full = await _claims(await _fresh_db(server, "bench_q_claim_full"), with_queue=True)
    print(
        f"unqueued claim ({label}), a full queue of 100,000 waiting: "
        f"median {statistics.median(full):.0f} µs"
    )


# ------------------------------------------------------------------ the claim's plan


async def plan(server: str) -> None:
    import asyncpg
    from sqlalchemy import event

    import durapipe as dp
    from durapipe._definition import load_target
    from durapipe._store import open_store
    from durapipe._store.store import ClaimFilter

    url = await _fresh_db(server, "bench_q_plan")
    store = await open_store(url, migrate=True)
    pdef = load_target(str(HERE / "dp_queue_pipelines.py") + ":trivial")
    await dp.Client(store).start(pdef, queue="q50")
    await _fill_queue(store, 100_000, queue="q50")
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    engine = store.db.writer.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", record)
    got = await store.claim(
        owner="bench",
        flt=ClaimFilter(pipelines={"trivial": pdef.version}),
        limit=50,
        ttl=30,
        now=time.time(),
    )
    event.remove(engine, "before_cursor_execute", record)
    print(f"a claim with 100,000 runs waiting took {len(got.rows)} runs; its statements:")
    conn = await asyncpg.connect(server.rsplit("/", 1)[0] + "/bench_q_plan")
    try:
        async with conn.transaction():
            for statement, params in seen:
                if not statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
                    continue
                print("\n" + " ".join(statement.split())[:300])
                for (line,) in await conn.fetch("EXPLAIN ANALYZE " + statement, *params):
                    print("    " + line)
            raise asyncpg.exceptions.PostgresError("roll back the claim explained")  # noqa: TRY301
    except asyncpg.exceptions.PostgresError:
        pass
    finally:
        await conn.close()
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pg-url", required=True, help="a PostgreSQL server (postgres database)")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--only", choices=["throughput", "unqueued", "plan"])
    ap.add_argument("--repo", help="measure `unqueued` on this checkout instead")
    ap.add_argument("--reps", type=int, default=1, help="throughput: repetitions")
    ap.add_argument("--dbos", action="store_true",
                    help="throughput: DBOS too (bench/dbos_queue.py; needs `pip install dbos`)")  # fmt: skip
    a = ap.parse_args()
    _path(a.repo)
    if a.only in (None, "plan"):
        asyncio.run(plan(a.pg_url))
    if a.only in (None, "unqueued"):
        asyncio.run(unqueued(a.pg_url, a.repo))
    if a.only in (None, "throughput"):
        asyncio.run(throughput(a.pg_url, a.runs, a.reps, a.dbos))


if __name__ == "__main__":
    main()
