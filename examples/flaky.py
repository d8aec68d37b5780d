"""Retries: a step that fails a few times, then succeeds; each failed try is in the history.

    durapipe run examples/flaky.py:flaky --input fail_times=2

The step is tried up to 1 + retries times, waiting retry_delay, then twice that (backoff=2),
and so on, between tries. `durapipe show RUN_ID` lists the failed tries. With fail_times=4 the
step runs out of retries and the run fails; `durapipe resume RUN_ID` tries it again.
"""

import durapipe as dp

_tries: dict[str, int] = {}  # per step id: a stand-in for a server that is busy at first


@dp.step(retries=3, retry_delay=0.2)
def fetch_report(fail_times: int) -> str:
    step_id = dp.context().step_id or "?"  # the same on every try: use it as an idempotency key
    n = _tries[step_id] = _tries.get(step_id, 0) + 1
    if n <= fail_times:
        raise ConnectionError(f"try {n}: the report server is busy")
    return f"report fetched on try {n}"


@dp.pipeline(version="1")
async def flaky(fail_times: int = 2) -> str:
    await dp.exec("echo", "fetching the report")
    report = await fetch_report(fail_times)
    await dp.exec("echo", report)
    return report
