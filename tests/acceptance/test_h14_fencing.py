"""Fencing (issue #14) with real processes: a worker paused past its lease writes no more log lines
into the run another worker finished. Both databases."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, wait_until

FENCING = str(PIPELINES / "fencing.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _call(db_url: str, fn: Callable[[Any], Any]) -> Any:
    import durapipe as dp

    async def go() -> Any:
        async with await dp.Client.connect(db_url) as c:
            return await fn(c)

    return asyncio.run(go())


def _logs(db_url: str, run_id: str) -> list[Any]:
    return _call(db_url, lambda c: c.store.read_logs(run_id, limit=100000))


def test_a_worker_woken_after_a_takeover_adds_no_lines_to_the_runs_logs(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    from durapipe._definition import load_target

    pdef = load_target(f"{FENCING}:chatty")
    rid = _call(db_url, lambda c: c.start(pdef))
    a = dp_spawn("worker", "-m", FENCING, env=FAST)
    wait_until(
        lambda: any(x.line == "tick" for x in _logs(db_url, rid)),
        what="worker A's command to print",
    )
    a.send_signal(signal.SIGSTOP)  # its command goes on printing into A's pipe
    try:
        b = dp_spawn("worker", "-m", FENCING, env=FAST)
        wait_until(
            lambda: any(x.attempt == 2 and x.line == "tick" for x in _logs(db_url, rid)),
            timeout=30,
            what="worker B to take over and print",
        )
        (tmp_path / "go").write_text("")
        wait_until(
            lambda: _call(db_url, lambda c: c.get(rid)).status == "completed",
            timeout=30,
            what="B to complete the run",
        )
    finally:
        a.send_signal(signal.SIGCONT)
    # A wakes, reads what its command printed meanwhile, and is refused at its next write.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(a.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    wait_until(
        lambda: any("lease lost" in line for line in lines),
        timeout=20,
        what="A to notice it lost the lease",
    )
    a.send_signal(signal.SIGTERM)  # it stores what it still buffers before it exits
    assert a.wait(timeout=30) == 0
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=30) == 0
    logs = _logs(db_url, rid)
    takeover = next(i for i, x in enumerate(logs) if x.attempt == 2)
    late = [(x.attempt, x.line) for x in logs[takeover:] if x.attempt != 2]
    assert not late, late
    assert "finished" in [x.line for x in logs if x.attempt == 2]
