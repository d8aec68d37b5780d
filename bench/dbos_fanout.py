"""DBOS's side of bench/fanout.py: a workflow that enqueues N child workflows and awaits them,
run by 2 DBOS worker processes.

    python bench/dbos_fanout.py drive --url URL --children N

`drive` launches DBOS only to enqueue (`DBOS.listen_queues([])`), starts 2 `worker` processes
(`DBOS.launch()` with executor ids of their own; their queue threads dequeue from queue `fan`,
DBOS's default polling, 1 s), enqueues the parent workflow on the same queue (so a worker runs
it, as a durapipe worker runs the parent) and waits for it. The parent enqueues its N children
on `fan` and awaits their handles in order. It prints `RESULT {"seconds": ..., "worker_hwm_mib":
[...]}`: from before the enqueue of the parent to its completion as DBOS recorded it
(`updated_at` of its SUCCESS), and the peak RSS (VmHWM) of both workers.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dbos_fanout_app as app  # noqa: E402
from benchlib import deadline, emit  # noqa: E402
from dbos import DBOS  # noqa: E402
from side_dbos import launch, query  # noqa: E402


def hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker(a: argparse.Namespace) -> None:
    launch(a.url, executor_id=a.executor_id)
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)  # the queue thread runs the workflows; terminated by `drive`
    finally:
        DBOS.destroy()


async def drive(a: argparse.Namespace) -> dict[str, object]:
    DBOS(config={"name": "durapipe-bench", "system_database_url": a.url,
                 "log_level": "WARNING", "executor_id": "bench-enqueuer"})  # type: ignore[arg-type]  # fmt: skip
    DBOS.listen_queues([])  # this process only enqueues
    DBOS.launch()
    fan = await DBOS.register_queue_async(app.FAN)
    cmd = [sys.executable, __file__, "worker", "--url", a.url]
    workers = [
        subprocess.Popen([*cmd, "--executor-id", f"bench-w{i}"], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220 - started once, before the clock
        for i in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            assert w.stdout.readline().strip() == "READY", "a DBOS worker did not start"
        await asyncio.sleep(3)  # their queue threads find the queue (listed every 1 s); not timed
        t0 = time.time()
        h = await fan.enqueue_async(app.fan_parent, a.children)
        end = deadline(a.timeout)
        sql = "SELECT status, updated_at FROM dbos.workflow_status WHERE workflow_uuid = ?"
        while time.monotonic() < end:
            rows = query(a.url, sql, (h.workflow_id,))
            if rows and rows[0][0] in ("SUCCESS", "ERROR"):
                break
            await asyncio.sleep(0.5)
        else:
            raise TimeoutError(f"the DBOS parent did not finish in {a.timeout} s")
        assert rows[0][0] == "SUCCESS", rows
        return {"seconds": rows[0][1] / 1000 - t0, "children": a.children,
                "worker_hwm_mib": [hwm_mib(w.pid) for w in workers]}  # fmt: skip
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
    ap.add_argument("--children", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=1800)
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
