"""@dp.transaction under real SIGKILL: `durapipe run` killed at a random instant, then resumed.

Each trial starts a run of ten transfers (tests/pipelines/bank_tx.py; each transfer pauses
between its two updates, a window for the kill), SIGKILLs the process at a random instant
while it moves money, resumes the run with `durapipe resume`, and checks that every transfer
was applied exactly once and the total conserved. Both databases; plain `def` transactions
(`bank`) and `async def` ones (`bank_async`, an AsyncConnection: aiosqlite on SQLite).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PIPELINES, wait_until
from sqlalchemy import text

import durapipe as dp

sys.path.insert(0, str(PIPELINES))
from bank_tx import expected_balances  # noqa: E402

BANK = str(PIPELINES / "bank_tx.py")
TRIALS = 3
TRANSFERS = 10
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _read(db_url: str, sql: str, **params: Any) -> list[Any]:
    async def go() -> list[Any]:
        store = await dp.open_store(db_url)
        try:
            return list(await store.run_read(lambda conn: conn.execute(text(sql), params).all()))
        finally:
            await store.close()

    return asyncio.run(go())


def _applied(db_url: str, run_id: str) -> list[int]:
    try:
        rows = _read(db_url, "SELECT n FROM bank_applied WHERE run_id = :r", r=run_id)
    except Exception:  # the table is not there yet (killed before the first transaction)
        return []
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize("pipeline", ["bank", "bank_async"])
def test_sigkill_at_random_instants_applies_each_transfer_once(
    dp_cli: Cli, dp_spawn: Any, db_url: str, pipeline: str
) -> None:
    rng = random.Random(5)
    env = {"BANK_PAUSE": "0.02"}
    killed_mid_run = 0
    for trial in range(TRIALS):
        proc = dp_spawn("run", f"{BANK}:{pipeline}", "--input", f"transfers={TRANSFERS}", env=env)
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()
        # Kill once money started moving (so the run is well under way), at a random instant.
        wait_until(lambda: _applied(db_url, run_id), timeout=30, what="a first transfer")  # noqa: B023
        done = wait_until(
            lambda: proc.poll() is not None or rng.random() < 0.15,  # noqa: B023
            interval=0.01,
            what="the instant to kill",
        )
        assert done
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if len(_applied(db_url, run_id)) < TRANSFERS:
            killed_mid_run += 1
        p = dp_cli("resume", run_id, env=env)
        assert p.returncode == 0, (trial, p.stderr)
        assert json.loads(p.stdout.strip().splitlines()[-1]) == TRANSFERS
        assert _applied(db_url, run_id) == list(range(TRANSFERS)), trial
        balances = _read(
            db_url, "SELECT balance FROM bank_accounts WHERE run_id = :r ORDER BY id", r=run_id
        )
        assert [b[0] for b in balances] == expected_balances(TRANSFERS), trial
    assert killed_mid_run >= 2, f"only {killed_mid_run} of {TRIALS} kills landed mid-run"
