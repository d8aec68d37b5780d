"""Test pipelines whose steps leave one line per real execution in $SIDE_DIR files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import durapipe as dp


def side(name: str, line: str) -> None:
    with open(Path(os.environ["SIDE_DIR"]) / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@dp.step
def count(i: int) -> int:
    side("steps", str(i))
    return i * 10


@dp.step
async def block_until_go(i: int) -> int:
    """Marks that it started, then waits for $SIDE_DIR/go (the test kills us meanwhile)."""
    side("steps", f"block-{i}")
    go = Path(os.environ["SIDE_DIR"]) / "go"
    while not go.exists():
        await __import__("asyncio").sleep(0.05)
    return i


@dp.pipeline(version="1")
async def counting(n: int = 5, block_at: int = 0) -> dict:
    total = 0
    for i in range(1, n + 1):
        total += await count(i)
        if i == block_at:
            await block_until_go(i)
    return {"total": total}


@dp.step
def flaky(i: int) -> int:
    side("flaky", str(i))
    if (Path(os.environ["SIDE_DIR"]) / "fail").exists():
        raise RuntimeError("the flag file says fail")
    return i


@dp.pipeline(version="1")
async def failing(n: int = 3) -> int:
    a = await count(1)
    b = await flaky(2)
    c = await count(3)
    return a + b + c


@dp.pipeline(version="1")
async def sleeper(seconds: float = 3.0) -> str:
    await count(1)
    await dp.sleep(seconds)
    await count(2)
    return "rested"


@dp.pipeline(version="1")
async def long_exec() -> int:
    await count(1)
    res = await dp.exec("sh", "-c", "echo started; sleep 30; echo finished")
    await count(2)
    return res.exit_code


def _unused() -> float:
    return time.time()


@dp.pipeline(version="1")
async def approval(timeout: float | None = None, use_default: bool = False) -> dict:
    await count(1)
    if use_default:
        ok = await dp.await_input(
            "approve", prompt="Ship it?", timeout=timeout, default="no answer"
        )
    else:
        ok = await dp.await_input("approve", prompt="Ship it?", timeout=timeout)
    await count(2)
    return {"approve": ok}


@dp.pipeline(version="1")
async def two_answers() -> list:
    first = await dp.await_input("n")
    second = await dp.await_input("n")
    return [first, second]


@dp.step
def cleanup() -> str:
    side("steps", "cleanup")
    return "cleaned"


@dp.pipeline(version="1")
async def guarded(wait: str = "input") -> str:
    try:
        await count(1)
        if wait == "input":
            await dp.await_input("never")
        elif wait == "exec":
            await dp.exec("sleep", "30")
        else:
            await dp.sleep(3600)
        return "not reached"
    finally:
        await cleanup()


@dp.pipeline(version="1")
async def exec_then_step() -> int:
    await count(1)
    # Runs until the test creates $SIDE_DIR/go.
    await dp.exec(
        "sh", "-c", 'echo waiting; while [ ! -e "$SIDE_DIR/go" ]; do sleep 0.05; done; echo end'
    )
    await count(2)
    return 2


@dp.pipeline(version="1")
async def approval_then_block() -> dict:
    ok = await dp.await_input("approve")
    await block_until_go(9)
    return {"approve": ok}


@dp.pipeline(version="1")
async def two_at_once() -> list:
    return await dp.gather(
        dp.await_input("a", prompt="first?"), dp.await_input("b", prompt="second?")
    )
