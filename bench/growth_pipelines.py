"""Pipelines of bench/growth.py (loaded by the bench and by `durapipe worker -m`)."""

from __future__ import annotations

import base64
import os
import time

import durapipe as dp

FAIL_AT_END = {"on": False}
TIMES: dict[str, float] = {}  # instrumentation of `steps` (not journaled)
_BLOB = base64.b64encode(os.urandom(1_000_000)).decode()  # incompressible text (TOAST, WAL)


@dp.step
async def trivial(i: int) -> int:
    return i


@dp.step
async def payload(size: int, i: int) -> str:
    """A result of `size` bytes of JSON (a string of size - 2 characters, quotes included)."""
    start = (i * 7919) % (len(_BLOB) - size)
    return _BLOB[start : start + size - 2]


@dp.pipeline(name="growth_steps", version="1")
async def steps(n: int) -> int:
    """(a): n trivial steps; with FAIL_AT_END on, it fails after them (to be resumed)."""
    TIMES["entered"] = time.perf_counter()
    total = 0
    for i in range(n):
        total += await trivial(i)
    TIMES["looped"] = time.perf_counter()
    if FAIL_AT_END["on"]:
        raise RuntimeError("stop here so the run can be resumed")
    return total


@dp.pipeline(name="growth_three", version="1")
async def three() -> int:
    """(b): three trivial steps."""
    return await trivial(1) + await trivial(2) + await trivial(3)


@dp.pipeline(name="growth_payload", version="1")
async def payloads(size: int, n: int) -> int:
    """(c): n steps, each returning `size` bytes."""
    total = 0
    for i in range(n):
        total += len(await payload(size, i))
    return total
