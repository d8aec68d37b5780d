"""Parents, children and gathers for the sub-pipeline tests."""

from __future__ import annotations

import asyncio
import os
import random
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
def effect(tag: str) -> str:
    _effect(tag)
    return tag


@dp.step
async def jitter(tag: str) -> str:
    await asyncio.sleep(random.random() * 0.05)
    _effect(tag)
    return tag


@dp.step
async def wait_go(tag: str) -> str:
    _effect(f"{tag}-start")
    go = Path(os.environ["SIDE_DIR"]) / "go"
    while not go.exists():
        await asyncio.sleep(0.05)
    return tag


@dp.pipeline(version="1")
async def build_image(sha: str) -> dict:
    await dp.exec("echo", f"building {sha}")
    await effect(f"built {sha}")
    return {"image": f"registry/app:{sha}"}


@dp.pipeline(version="1")
async def broken(why: str = "no") -> None:
    await effect("broken ran")
    raise ValueError(f"broken because {why}")


@dp.pipeline(version="1")
async def deploy(sha: str = "abc123") -> dict:
    built = await dp.run_subpipeline(build_image, sha=sha)
    return {"deployed": built["image"]}


@dp.pipeline(version="1")
async def deploy_broken() -> str:
    try:
        await dp.run_subpipeline(broken, why="tested")
    except dp.SubpipelineFailed as exc:
        return f"child {exc.child_run_id} failed: {exc.error['message']}"
    return "not reached"


@dp.pipeline(version="1")
async def slow_child() -> str:
    await wait_go("child")
    await effect("child after go")
    return "child done"


@dp.pipeline(version="1")
async def parent_of_slow() -> str:
    out = await dp.run_subpipeline(slow_child)
    await effect("parent after child")
    return out


@dp.pipeline(version="1")
async def fan(n: int = 6) -> list:
    results = await dp.gather(*(jitter(f"j{i}") for i in range(n)))
    await wait_go("after-gather")
    more = await dp.gather(*(jitter(f"k{i}") for i in range(n)))
    return results + more


@dp.pipeline(version="1")
async def level3(x: int) -> int:
    await effect(f"l3 {x}")
    return x * 3


@dp.pipeline(version="1")
async def level2(x: int) -> int:
    return await dp.run_subpipeline(level3, x=x + 1) + 2


@dp.pipeline(version="1")
async def level1(x: int = 1) -> int:
    return await dp.run_subpipeline(level2, x=x) + 1


@dp.pipeline(version="1")
async def child_sleeps(seconds: float = 3600.0) -> str:
    try:
        await dp.sleep(seconds)
    finally:
        await effect("child cleanup")
    return "woke"


@dp.pipeline(version="1")
async def parent_cancelled() -> list:
    return await dp.gather(dp.run_subpipeline(child_sleeps), dp.run_subpipeline(child_sleeps))


@dp.pipeline(version="1")
async def tiny(i: int) -> int:
    return await effect(f"t{i}") and i


@dp.pipeline(version="1")
async def fan_out(n: int = 500, limit: int = 50) -> int:
    results = await dp.gather(*(dp.run_subpipeline(tiny, i=i) for i in range(n)), limit=limit)
    return sum(results)


@dp.pipeline(version="1")
async def bad_child_target() -> None:
    await dp.run_subpipeline(effect, tag="x")  # a step, not a pipeline


@dp.pipeline(version="1")
async def bad_child_inputs() -> None:
    await dp.run_subpipeline(build_image, sha="1", colour="red")


@dp.pipeline(version="1")
async def forever(depth: int = 0) -> int:
    return await dp.run_subpipeline(forever, depth=depth + 1)
