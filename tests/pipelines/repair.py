"""Pipelines for the fork and edit tests: every kind of call, each leaving a side-effect line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import durapipe as dp


def _effect(line: str) -> None:
    """A line "RUN what" in SIDE_DIR/effects, RUN the id of the top run of the tree."""
    fd = os.open(
        Path(os.environ["SIDE_DIR"]) / "effects", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, f"{dp.context().root_run_id} {line}\n".encode())
    finally:
        os.close(fd)


@dp.step
def fetch_manifest(n: str) -> dict:
    _effect("fetch")
    return {"image": f"app:{n}"}


@dp.step
def deploy_part(part: str, manifest: dict) -> str:
    _effect(f"deploy {part}")
    return f"{part}={manifest['image']}"


@dp.step
def verify(manifest: dict) -> str:
    _effect(f"verify {manifest['image']}")
    if manifest["image"] == "app:bad":
        raise ValueError("image app:bad does not exist")
    return "ok"


@dp.pipeline(version="1")
async def build(sha: str) -> str:
    _effect(f"child {sha}")
    return f"built {sha}"


@dp.pipeline(version="1")
async def release(n: str = "1") -> dict:
    manifest = await fetch_manifest(n)  # 1
    root = dp.context().root_run_id
    await dp.exec("sh", "-c", f'echo "{root} exec" >> "$SIDE_DIR/effects"')  # 2
    await dp.sleep(0.01)  # 3
    approval = await dp.await_input("approve", timeout=0.2, default="auto")  # 4
    built = await dp.run_subpipeline(build, sha=n)  # 5
    parts = await dp.gather(deploy_part("a", manifest), deploy_part("b", manifest))  # 6/0/1, 6/1/1
    checked = await verify(manifest)  # 7
    return {"approval": approval, "built": built, "parts": parts, "verify": checked}


@dp.pipeline(version="1")
async def rollout(n: str = "bad") -> dict:
    manifest = await fetch_manifest(n)  # 1
    part = await deploy_part("a", manifest)  # 2
    checked = await verify(manifest)  # 3
    return {"part": part, "verify": checked}


@dp.step
async def hold_on() -> str:
    _effect("holding")
    go = Path(os.environ["SIDE_DIR"]) / "go"
    while not go.exists():
        await asyncio.sleep(0.05)
    return "went"


@dp.pipeline(version=os.environ.get("REPAIR_VERSION", "1"))
async def held(n: str = "1") -> str:
    await fetch_manifest(n)
    return await hold_on()
