"""Pipelines for tests/acceptance/test_h14_console.py."""

from __future__ import annotations

import durapipe as dp


@dp.pipeline(version="1")
async def slow_then_ask() -> dict:
    # Well over the two seconds after which the live status line shows a running command.
    await dp.exec("sleep", "3.5")
    answer = await dp.await_input("answer", prompt="Go on?")
    return {"answer": answer}
