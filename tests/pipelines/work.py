"""Pipelines for worker tests. Side effects: one line per real execution in $SIDE_DIR/effects."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import durapipe as dp


def _effect(line: str) -> None:
    fd = os.open(
        Path(os.environ["SIDE_DIR"]) / "effects", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dp.step
def effect(tag: str, i: int) -> str:
    _effect(f"{dp.context().run_id} {tag}{i}")
    return f"{tag}{i}"


@dp.step
async def hold(tag: str) -> str:
    """Marks its start, then waits for $SIDE_DIR/go."""
    _effect(f"{dp.context().run_id} {tag}-start")
    go = Path(os.environ["SIDE_DIR"]) / "go"
    while not go.exists():
        await asyncio.sleep(0.05)
    return tag


@dp.pipeline(version="1")
async def five(n: int = 5) -> int:
    for i in range(1, n + 1):
        await effect("s", i)
    return n


@dp.pipeline(version="1")
async def held(before: int = 2, after: int = 2) -> str:
    for i in range(1, before + 1):
        await effect("a", i)
    await hold("h")
    for i in range(1, after + 1):
        await effect("b", i)
    return "done"


@dp.pipeline(version="1")
async def nap(seconds: float = 2.0) -> str:
    await dp.sleep(seconds)
    await effect("z", 1)
    return "awake"
