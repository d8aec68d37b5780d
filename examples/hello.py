"""Hello, durapipe: a command, a step, a durable sleep.

durapipe run examples/hello.py:hello --input name=world
"""

import durapipe as dp


@dp.step
def greeting(name: str) -> str:
    return f"Hello, {name}!"


@dp.pipeline(version="1")
async def hello(name: str = "world", nap: float = 1.0) -> dict[str, str]:
    today = await dp.exec("date", "+%A")  # journaled: a resumed run keeps the day it started on
    day = today.stdout.strip()
    text = await greeting(name)
    await dp.sleep(nap)
    await dp.exec("echo", text, f"Happy {day}!")
    return {"greeting": text, "day": day}
