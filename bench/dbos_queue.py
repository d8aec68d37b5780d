"""The DBOS side of `bench/queues.py --only throughput --dbos`: queue throughput, 4 workers.

    python bench/dbos_queue.py drive --url postgresql://.../db [--runs 1000] [--concurrency 50]

`drive` launches DBOS in this process listening to no user queue (`DBOS.listen_queues([])`, so
it only enqueues), registers the queue (`DBOS.register_queue_async`, `concurrency=N`, or no limit
with `--concurrency 0`; DBOS's default polling interval, 1 s), starts 4 `worker` processes (each
`DBOS.launch()` with an executor id of its own; DBOS's queue thread dequeues from every
registered queue), waits until they are up, then enqueues `--runs` trivial workflows
(`Queue.enqueue_async`, at most 100 in flight, as bench/side_dbos.py) and waits for them all.
It prints `RESULT {"runs_per_s": ...}`: runs / (the last completion DBOS recorded, the
`updated_at` of the last SUCCESS, minus the time before the first enqueue).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dbos_app as app  # noqa: E402
from benchlib import bounded, deadline, emit  # noqa: E402
from dbos import DBOS  # noqa: E402
from side_dbos import launch, query  # noqa: E402

QUEUE = "q50"
WORKERS = 4


def worker(a: argparse.Namespace) -> None:
    launch(a.url, executor_id=a.executor_id)
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)  # the queue thread runs the workflows; terminated by `drive`
    finally:
        DBOS.destroy()


async def drive(a: argparse.Namespace) -> dict[str, float]:
    DBOS(config={"name": "durapipe-bench", "system_database_url": a.url,
                 "log_level": "WARNING", "executor_id": "bench-enqueuer"})  # type: ignore[arg-type]  # fmt: skip
    DBOS.listen_queues([])  # this process only enqueues
    DBOS.launch()
    q = await DBOS.register_queue_async(QUEUE, concurrency=a.concurrency or None)
    cmd = [sys.executable, __file__, "worker", "--url", a.url]
    workers = [
        subprocess.Popen([*cmd, "--executor-id", f"bench-w{i}"], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220 - started once, before the clock
        for i in range(WORKERS)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            assert w.stdout.readline().strip() == "READY", "a DBOS worker did not start"
        await asyncio.sleep(3)  # their queue threads find the queue (listed every 1 s); not timed
        t0 = time.time()
        await bounded([q.enqueue_async(app.one_step) for _ in range(a.runs)])
        end = deadline(600)
        sql = "SELECT count(*), max(updated_at) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        while time.monotonic() < end:
            n, last_ms = query(a.url, sql)[0]
            if n >= a.runs:
                break
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"{n} of {a.runs} DBOS workflows done in 600 s")
        return {"runs_per_s": a.runs / (last_ms / 1000 - t0), "seconds": last_ms / 1000 - t0}
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["drive", "worker"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50, help="0: a queue with no limit")
    ap.add_argument("--executor-id", default=None)
    a = ap.parse_args()
    if a.mode == "worker":
        worker(a)
        return
    try:
        emit(asyncio.run(drive(a)))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
