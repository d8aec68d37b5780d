"""Small helpers shared by the two bench sides (standard library only)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any


def emit(result: dict[str, Any]) -> None:
    """Print the measurement as the last line on stdout: run.py reads it."""
    print("RESULT " + json.dumps(result), flush=True)


def rss_mib(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of a process every `every` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int | str = "self", every: float = 0.25) -> None:
        self.pid, self.every = pid, every
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = rss_mib(self.pid)
            if v is not None:
                self.peak = max(self.peak, v)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    ev = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def gap_stats(began: list[float], start: float, end: float) -> dict[str, Any]:
    """Gaps between consecutive instants ``began`` (steps' start times, seconds) that overlap
    [start, end] ("during") and that end before ``start`` ("base"): count, p50/p99/max in ms."""
    pairs = list(zip(began, began[1:], strict=False))
    during = [(b - a) * 1000 for a, b in pairs if b > start and a < end]
    base = [(b - a) * 1000 for a, b in pairs if b < start]
    out: dict[str, Any] = {"steps_during": len(during)}
    for name, gaps in (("during", during), ("base", base)):
        out[f"{name}_max_ms"] = max(gaps) if gaps else float("nan")
        out[f"{name}_p99_ms"] = pct(gaps, 99)
        out[f"{name}_p50_ms"] = pct(gaps, 50)
    return out


def wake_stats(rows: list[tuple[float, float, float]]) -> dict[str, Any]:
    """rows: (sleep recorded at, intended wake, actual wake) per run -> delay percentiles (ms)."""
    delays = [(actual - intended) * 1000 for _, intended, actual in rows]
    return {
        "p50_ms": pct(delays, 50),
        "p99_ms": pct(delays, 99),
        "max_ms": max(delays),
        "min_ms": min(delays),
        "peak_sleeping": peak_overlap([(a, b) for a, b, _ in rows]),
        "n": len(rows),
    }


async def bounded(coros: list[Any], limit: int = 100) -> list[Any]:
    """Await coroutines with at most `limit` in flight; results in order."""
    import asyncio

    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def env_with_repo() -> dict[str, str]:
    """Environment for subprocesses: the repository on PYTHONPATH (so -m durapipe is this tree)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    return env
