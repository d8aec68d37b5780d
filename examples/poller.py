"""A poller that checks something every hour, for ever, with a bounded history.

    durapipe start examples/poller.py:poller --input url=https://example.com/health --tag app=web
    durapipe worker -m examples/poller.py
    durapipe list --tag app=web            # one line: the poller's live run
    durapipe stop FIRST_RUN_ID             # stops whichever run of the chain is live

Each run makes 24 checks (a day) and then continues as new: it ends `continued` and, in the same
transaction, its successor starts with a fresh history, carrying the count of failures so far
and the run's tags. A history never holds more than a day's calls, however long it runs. The
hourly sleeps suspend the run on a worker (no memory held between checks).

To try it without waiting hours (three links of two checks, a second apart, then it ends; the
run command follows the chain and prints the last link's result):

    durapipe run examples/poller.py:poller --input url=http://127.0.0.1:9/ --input every=1 --input per_run=2 --input stop_after=6
"""

import urllib.request

import durapipe as dp


@dp.step(retries=2, retry_delay=5.0)
def check(url: str) -> bool:
    """One look at the URL: True when it answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return 200 <= int(resp.status) < 300
    except OSError:
        return False


@dp.pipeline(version="1")
async def poller(
    url: str,
    every: float = 3600.0,
    per_run: int = 24,
    stop_after: int = 0,
    checks: int = 0,
    failures: int = 0,
) -> dict[str, int]:
    """``stop_after``: end after that many checks in all (0: never)."""
    for _ in range(per_run):
        if not await check(url):
            failures += 1
            dp.logger.warning("%s is down (%d failures in %d checks)", url, failures, checks + 1)
        checks += 1
        if checks == stop_after:
            return {"checks": checks, "failures": failures}
        await dp.sleep(every)
    await dp.continue_as_new(
        url=url,
        every=every,
        per_run=per_run,
        stop_after=stop_after,
        checks=checks,
        failures=failures,
    )
