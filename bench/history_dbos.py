"""DBOS's side of bench/history.py's gc: delete the workflows completed more than 30 days ago
from a year of history, while a workflow takes steps back to back in the same process.

    python bench/history_dbos.py --url postgresql://.../DB [--runs 100000] [--steps 10]

The DBOS library (3.4) has no garbage-collect operation of its own (its retention policies are
a feature of DBOS Conductor, the hosted console); what an application can call is
``DBOS.list_workflows(status=..., completed_before=..., limit=1000)`` then
``DBOS.delete_workflows(ids)`` (each call one transaction over the workflows' status, inputs,
outputs and steps), a batch at a time: that is what is timed here. The year is bulk-loaded with
COPY into DBOS's own tables (workflow_status, workflow_input, workflow_output,
operation_outputs): ``--runs`` workflows over 365 days with ``--steps`` steps each. The stepping
workflow records each step's start time; the gap between two is one step's checkpoint + the
next step's start. Prints a RESULT line (bench/benchlib.emit).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import emit, gap_stats  # noqa: E402
from dbos import DBOS  # noqa: E402
from side_dbos import launch  # noqa: E402

DAY = 86400.0
BEATS: list[float] = []
STOP = {"now": False}


@DBOS.step()
async def beat() -> float:
    t = time.time()
    BEATS.append(t)
    return t


@DBOS.workflow()
async def beater() -> int:
    n = 0
    while not STOP["now"]:  # not deterministic, and not meant to be replayed: a bench's load
        await beat()
        n += 1
    return n


async def load(url: str, n: int, steps: int, end: float) -> float:
    import asyncpg

    span = 365 * DAY

    def created_ms(i: int) -> int:
        return int((end - span + span * (i + 0.5) / n) * 1000)

    def status() -> Any:
        for i in range(n):
            c = created_ms(i)
            s = "ERROR" if i % 25 == 0 else "SUCCESS"
            yield (f"wf_{i:09d}", s, "history", c, c + 60_000, 0, c + 60_000, c)

    def inputs() -> Any:
        for i in range(n):
            yield (f"wf_{i:09d}", '{"args": [], "kwargs": {"n": 1}}', created_ms(i))

    def outputs() -> Any:
        for i in range(n):
            yield (f"wf_{i:09d}", '{"ok": true}', created_ms(i) + 60_000)

    def ops() -> Any:
        for i in range(n):
            c = created_ms(i)
            for s in range(steps):
                yield (f"wf_{i:09d}", s, "work", f'{{"i": {s}}}', c + s * 1000, c + s * 1000 + 1,
                       c + s * 1000 + 1)  # fmt: skip

    t0 = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "workflow_status", schema_name="dbos", records=status(),
            columns=["workflow_uuid", "status", "name", "created_at", "updated_at", "priority",
                     "completed_at", "started_at_epoch_ms"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "workflow_input", schema_name="dbos", records=inputs(),
            columns=["workflow_uuid", "inputs", "retention_timestamp"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "workflow_output", schema_name="dbos", records=outputs(),
            columns=["workflow_uuid", "output", "retention_timestamp"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "operation_outputs", schema_name="dbos", records=ops(),
            columns=["workflow_uuid", "function_id", "function_name", "output",
                     "started_at_epoch_ms", "completed_at_epoch_ms", "retention_timestamp"],
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


def delete_batch(cutoff_iso: str, batch: int) -> int:
    wfs = DBOS.list_workflows(
        status=["SUCCESS", "ERROR", "CANCELLED"],
        completed_before=cutoff_iso,
        limit=batch,
        load_input=False,
        load_output=False,
    )
    if wfs:
        DBOS.delete_workflows([w.workflow_id for w in wfs])
    return len(wfs)


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    launch(a.url)
    load_s = await load(a.url, a.runs, a.steps, time.time() - 3600)
    handle = await DBOS.start_workflow_async(beater)
    while len(BEATS) < 200:  # noqa: ASYNC110 - the workflow steps
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)
    cutoff = dt.datetime.fromtimestamp(time.time() - 30 * DAY, tz=dt.UTC).isoformat()
    g0 = time.time()
    deleted = 0
    while True:
        n = await asyncio.to_thread(delete_batch, cutoff, a.batch)
        deleted += n
        if n < a.batch:
            break
    g1 = time.time()
    await asyncio.sleep(2)
    STOP["now"] = True
    await handle.get_result()
    return {
        "runs": a.runs,
        "steps": a.steps,
        "load_s": load_s,
        "deleted": deleted,
        "gc_s": g1 - g0,
        **gap_stats(BEATS, g0, g1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    a = ap.parse_args()
    res = asyncio.run(main_async(a))
    DBOS.destroy()
    emit(res)


if __name__ == "__main__":
    main()
