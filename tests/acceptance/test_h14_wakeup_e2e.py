"""No lost wake-ups around suspension, end to end (issue #14): a real worker process suspending
runs at once (``--suspend-after 0.2``) while inputs and stops arrive at random moments around
each suspension. Both databases. The exact windows are held open in
tests/integration/test_h14_wakeup.py; this is the field's view of them."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from conftest import PIPELINES

import durapipe as dp
from durapipe._definition import load_target

WAKEUP = str(PIPELINES / "h14_wakeup.py")
ASKS, NAPS = 40, 10
DEADLINE = 15.0  # for every run to end once all inputs and stops were sent (about 1 s here)


async def _scenario(db_url: str, rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    ask = load_target(f"{WAKEUP}:wake_ask")
    nap = load_target(f"{WAKEUP}:wake_nap")
    async with await dp.Client.connect(db_url) as client:
        asks = [await client.start(ask, tag=str(i)) for i in range(ASKS)]
        naps = [await client.start(nap) for _ in range(NAPS)]
        waits_for = {**dict.fromkeys(asks, "waiting"), **dict.fromkeys(naps, "sleeping")}
        acting: list[asyncio.Task[Any]] = []

        async def act(run_id: str, delay: float) -> None:
            await asyncio.sleep(delay)
            if run_id in asks:
                await client.send_input(run_id, "go", run_id)
            else:
                await client.stop(run_id)

        # As each run starts its wait (still held by the worker, about to be suspended), send
        # its input or stop it a random 0-40 ms later: before, during or after the suspension.
        end = time.monotonic() + DEADLINE
        while waits_for:
            assert time.monotonic() < end, f"runs never started waiting: {sorted(waits_for)}"
            rows = await client.store.get_runs(list(waits_for))
            for row in rows:
                if row.status == waits_for[row.id]:
                    del waits_for[row.id]
                    delay = rng.uniform(0, 0.04)
                    acting.append(asyncio.ensure_future(act(row.id, delay)))
            await asyncio.sleep(0.005)
        await asyncio.gather(*acting)

        end = time.monotonic() + DEADLINE
        while True:
            rows = await client.store.get_runs(asks + naps)
            stuck = [
                f"{r.id} {r.status} (lease {r.lease_owner}, wake_at {r.wake_at}, "
                f"requested {r.requested})"
                for r in rows
                if r.status != ("completed" if r.id in asks else "stopped")
            ]
            if not stuck or time.monotonic() > end:
                break
            await asyncio.sleep(0.1)
        outputs = {r.id: r.output for r in await client.store.get_runs(asks)}
        return stuck, outputs


def test_inputs_and_stops_around_suspensions_are_never_lost(db_url: str, dp_spawn: Any) -> None:
    seed = random.randrange(1 << 30)
    worker = dp_spawn("worker", "-m", WAKEUP, "--suspend-after", "0.2")
    stuck, outputs = asyncio.run(_scenario(db_url, random.Random(seed)))
    assert not stuck, f"seed {seed}: {len(stuck)} runs lost their wake-up:\n" + "\n".join(stuck)
    for run_id, output in outputs.items():  # each took its own input, once
        assert json.loads(output)["got"] == run_id
    assert worker.poll() is None
