"""Pipelines for the lost wake-up tests (tests/integration/test_h14_wakeup.py and
tests/acceptance/test_h14_wakeup_e2e.py): runs that wait for an input or sleep, so a worker
suspends them, while the tests send inputs and stops."""

import durapipe as dp


@dp.pipeline(version="1")
async def wake_ask(tag: str = "") -> object:
    value = await dp.await_input("go")
    return {"tag": tag, "got": value}


@dp.pipeline(version="1")
async def wake_nap(seconds: float = 3600) -> str:
    await dp.sleep(seconds)
    return "woke"
