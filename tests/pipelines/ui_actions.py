"""Pipelines the web UI's action tests drive: a run waiting for a message, runs that fail (to
fork and to edit), a run that continues as new."""

from __future__ import annotations

import durapipe as dp


@dp.pipeline(version="1")
async def inbox() -> dict:
    """Publishes where it is, waits for a message on ``go``, returns it."""
    await dp.set_event("stage", "waiting for go")
    got = await dp.recv("go")
    await dp.set_event("stage", "got it")
    return {"got": got}


@dp.step
def plan(n: str) -> dict:
    return {"image": f"app:{n}"}


@dp.step
def check(n: str) -> str:
    if n == "bad":
        raise ValueError(f"release {n} is broken")
    return f"checked {n}"


@dp.pipeline(version="1")
async def release(n: str = "bad") -> dict:
    """Fails at step 2 for n=bad: a fork from there with n=good completes."""
    planned = await plan(n)  # 1
    checked = await check(n)  # 2
    return {"plan": planned, "check": checked}


@dp.step
def verify(manifest: dict) -> str:
    if manifest["image"] == "app:bad":
        raise ValueError("image app:bad does not exist")
    return "ok"


@dp.pipeline(version="1")
async def deploy(n: str = "bad") -> dict:
    """Fails at step 2 for n=bad: step 1's result edited to app:good, a resume completes."""
    manifest = await plan(n)  # 1
    verified = await verify(manifest)  # 2
    return {"image": manifest["image"], "verify": verified}


@dp.pipeline(version="1")
async def rounds(round: int = 0) -> int:
    """Continues as new once: a chain of two runs."""
    if round < 1:
        await dp.continue_as_new(round=round + 1)
    return round
