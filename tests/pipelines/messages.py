"""Pipelines for the messages tests (tests/acceptance/test_messages.py)."""

from __future__ import annotations

from typing import Any

import durapipe as dp


@dp.pipeline(version="1")
async def pinger(peer: str, rounds: int = 100) -> list[Any]:
    """Sends ping i to ``peer`` and waits for pong i, ``rounds`` times."""
    me = dp.context().run_id
    got = []
    for i in range(rounds):
        await dp.send(peer, "ping", {"i": i, "from": me})
        got.append(await dp.recv("pong"))
    return got


@dp.pipeline(version="1")
async def ponger(rounds: int = 100) -> list[Any]:
    """Answers each ping with a pong to its sender."""
    got = []
    for _ in range(rounds):
        m = await dp.recv("ping")
        got.append(m["i"])
        await dp.send(m["from"], "pong", m["i"])
    return got


@dp.pipeline(version="1")
async def inbox() -> list[Any]:
    """Messages sent before, during and after its receives."""
    await dp.await_input("go")  # a message sent meanwhile is queued before recv asks
    a = await dp.recv("note")
    b = await dp.recv("note")  # waits (suspended): the message arriving wakes the run
    await dp.set_event("stage", "took-two")
    await dp.await_input("go2")  # a message sent now arrives after the receives above
    c = await dp.recv("note")
    return [a, b, c]


@dp.pipeline(version="1")
async def nothing_to_wait_for() -> None:
    await dp.first()  # type: ignore[call-overload]


@dp.pipeline(version="1")
async def quick() -> str:
    return "done"
