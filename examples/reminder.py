"""A reminder: sleep for days (a durable timer), then print the message.

    durapipe run examples/reminder.py:reminder --input days=3 --input message="renew the TLS certificate"

The timer is recorded in the history, so the wait survives anything: Ctrl-C leaves the run
`stopped` and `durapipe resume RUN_ID` sleeps only what is left. For waits this long, queue the
run for a worker instead; the worker suspends it (no memory held) and wakes it when it is due:

    durapipe start examples/reminder.py:reminder --input days=3
    durapipe worker -m examples/reminder.py

Tests skip the wait with the testing kit's clock (durapipe.testing.SkippingClock).
"""

import durapipe as dp


@dp.pipeline(version="1")
async def reminder(message: str = "stand up and stretch", days: float = 3.0) -> str:
    await dp.sleep(days * 86400)
    await dp.exec("echo", f"Reminder: {message}")
    return message
