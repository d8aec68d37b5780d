"""Pipelines for tests/acceptance/test_h14_engine.py. Steps append one line per real execution to
$SIDE_DIR files; flag files in $SIDE_DIR decide what fails."""

from __future__ import annotations

import os
import time
from pathlib import Path

import durapipe as dp


def _dir() -> Path:
    return Path(os.environ["SIDE_DIR"])


def side(name: str, line: str) -> None:
    with open(_dir() / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- a saga (item 8a)


@dp.step
def withdraw(amount: int) -> int:
    side("ledger", f"withdraw {amount}")
    return amount


@dp.step
def deposit(amount: int) -> int:
    if (_dir() / "bank_down").exists():
        raise RuntimeError("the bank is down")
    side("ledger", f"deposit {amount}")
    return amount


@dp.step
def refund(amount: int) -> int:
    side("ledger", f"refund {amount}")
    return amount


@dp.pipeline(version="1")
async def transfer(amount: int = 10, compensate: bool = True) -> str:
    await withdraw(amount)
    try:
        await deposit(amount)
    except dp.StepFailed as exc:
        if compensate:
            await refund(amount)  # the failure is handled: a call recorded after it
        raise RuntimeError(f"transfer of {amount} failed ({exc})") from exc
    return "moved"


# ---------------------------------------------------------------- an interrupted step (item 7)


@dp.step
def wait_for_go(tag: str) -> str:
    """A sync step: marks that it started, then waits for $SIDE_DIR/go (killed meanwhile)."""
    side("steps", f"{tag}-start")
    while not (_dir() / "go").exists():
        time.sleep(0.02)
    side("steps", f"{tag}-end")
    return tag


@dp.pipeline(version="1")
async def slow_step() -> str:
    await withdraw(1)
    out = await wait_for_go("w")
    await withdraw(2)
    return str(out)


# ---------------------------------------------------------------- unprintable errors (item 11)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no str for you")


@dp.step
def bad_step() -> int:
    raise Unprintable()


@dp.pipeline(version="1")
async def raises_unprintable(in_step: bool = False) -> int:
    await withdraw(1)
    if in_step:
        return int(await bad_step())
    raise Unprintable()
