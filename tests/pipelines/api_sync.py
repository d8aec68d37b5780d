"""Pipelines for tests/integration/test_sync_client.py (a worker runs them from this file)."""

import durapipe as dp


@dp.step
def shout(word: str) -> str:
    return word.upper()


@dp.pipeline(version="1")
async def api_child(word: str, times: int = 1) -> str:
    return await shout(word) * times


@dp.pipeline(version="1")
async def api_approve(word: str = "ok") -> dict[str, object]:
    said = await dp.await_input("approve")
    child = await dp.run_subpipeline(api_child, word, 2)  # inputs by position
    return {"said": said, "child": child}


@dp.pipeline(version="1")
async def api_nap() -> str:
    await dp.sleep(3600)
    return "woke"


@dp.pipeline(version="1")
async def api_too_many() -> str:
    return await dp.run_subpipeline(api_child, "a", 2, 3)  # one input too many (mypy says so)
