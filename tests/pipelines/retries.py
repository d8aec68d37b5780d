"""Pipelines for timeouts, durable retries and the recovery limit (tests/acceptance/test_retries.py).

Side effects: one line per real execution in $SIDE_DIR/effects.
"""

from __future__ import annotations

import os
import signal
import time
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
def mark(tag: str) -> str:
    _effect(tag)
    return tag


@dp.pipeline(version="1")
async def wait_forever() -> None:
    """Waits for an input that never comes; its finally block records that it ran."""
    try:
        await dp.await_input("never")
    finally:
        await mark("finally")


@dp.step(timeout=0.5, retries=2, retry_delay=0.1, jitter=False)
def slow_sync() -> int:
    """Tries 1 and 2 overrun their timeout (the thread runs on); try 3 returns."""
    attempt = dp.context().attempt
    _effect(f"slow_sync try {attempt}")
    if attempt < 3:
        time.sleep(1.5)
    return attempt


@dp.pipeline(version="1")
async def sync_timeout() -> int:
    return await slow_sync()


@dp.step(timeout=0.3, retries=1, retry_delay=0.05, jitter=False)
def always_slow() -> None:
    time.sleep(1.0)


@dp.pipeline(version="1")
async def sync_timeout_fails() -> str:
    try:
        await always_slow()
    except dp.StepTimeout as exc:
        return f"StepTimeout {exc.timeout:g}"
    return "no timeout"


@dp.step(retries=1, retry_delay=4, jitter=False)
def flaky() -> str:
    """Fails its first try; a SIGKILL during the retry delay must not make the retry early."""
    attempt = dp.context().attempt
    _effect(f"flaky try {attempt} at {time.time()!r}")
    if attempt == 1:
        raise RuntimeError("first try fails")
    return f"ok on try {attempt}"


@dp.pipeline(version="1")
async def retry_later() -> str:
    return await flaky()


@dp.step(retries=None, retry_delay=1.5, backoff=1, jitter=True, non_retryable=(KeyError,))
def until_file() -> str:
    """Fails until $SIDE_DIR/ready exists, or at once with KeyError if $SIDE_DIR/bad does."""
    side = Path(os.environ["SIDE_DIR"])
    _effect(f"until_file try {dp.context().attempt}")
    if (side / "bad").exists():
        raise KeyError("bad")
    if not (side / "ready").exists():
        raise RuntimeError("not ready")
    return "ready"


@dp.pipeline(version="1")
async def retry_suspends() -> str:
    return await until_file()


@dp.step
def crash_unless_fixed() -> str:
    """Kills its own process (like an OOM kill) until $SIDE_DIR/fixed exists."""
    if not (Path(os.environ["SIDE_DIR"]) / "fixed").exists():
        _effect("crash")
        dp.logger.warning("about to crash")
        time.sleep(0.6)  # the worker ships this line to the run's log first
        os.kill(os.getpid(), signal.SIGKILL)
    _effect("fixed")
    return "fixed"


@dp.pipeline(version="1", max_recoveries=1)
async def crasher() -> str:
    return await crash_unless_fixed()


@dp.pipeline(version="1")
async def child_waits() -> None:
    try:
        await dp.await_input("never")
    finally:
        await mark("child finally")


@dp.pipeline(version="1", timeout=4)
async def parent_times_out() -> None:
    try:
        await dp.run_subpipeline(child_waits)
    finally:
        await mark("parent finally")


@dp.pipeline(version="1")
async def exec_retries() -> str:
    """A command that fails until its second try (a file marks the first)."""
    side = os.environ["SIDE_DIR"]
    script = f"test -e {side}/tried && echo ok || {{ touch {side}/tried; exit 3; }}"
    out = await dp.exec(script, shell=True, retries=2, retry_delay=0.1, jitter=False)
    return out.stdout.strip()
