"""The chaos test's pipelines: steps, exec, sleeps, inputs and children in one run."""

from __future__ import annotations

import os
from pathlib import Path

import durapipe as dp


def _append(name: str, line: str) -> None:
    fd = os.open(Path(os.environ["SIDE_DIR"]) / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dp.step
def effect(tag: str) -> str:
    _append("effects", f"{dp.context().run_id} {tag}")
    return tag


@dp.pipeline(version="1")
async def chaos_child(i: int) -> int:
    await effect("c")
    await dp.sleep(0.2)
    return i * 2


@dp.pipeline(version="1")
async def chaos(i: int) -> dict:
    await effect("a")
    run_id = dp.context().run_id
    await dp.exec("sh", "-c", 'echo "$1 x" >> "$SIDE_DIR/effects"', "sh", run_id)
    await dp.sleep(0.3)
    got = await dp.await_input("go") if i % 3 == 0 else None
    kid = await dp.run_subpipeline(chaos_child, i=i) if i % 4 == 0 else None
    a, b = await dp.gather(effect("g0"), effect("g1"))
    await effect("b")
    return {"i": i, "input": got, "child": kid, "g": [a, b]}
