"""A nightly job: a cron schedule declared with the pipeline; the workers fire it.

    durapipe run examples/nightly.py:nightly --input keep=3

That runs it once, now, here. On schedule, start a worker: it adds the schedule `nightly`
(03:00 Berlin time, every day) and starts one run per night, even with several workers up:

    durapipe worker -m examples/nightly.py
    durapipe schedule list
    durapipe schedule trigger nightly      # one run now, through the workers

A run started by the schedule knows which night it is for: `dp.context().scheduled_at` is the
tick's time, the same on every replay (a run started by hand has None there, and uses now).
"""

import datetime as dt

import durapipe as dp


@dp.step
def report_day(tick: float | None) -> str:
    """The day this run is for: the schedule's tick, or today when run by hand."""
    when = dt.datetime.fromtimestamp(tick) if tick is not None else dt.datetime.now()
    return when.strftime("%Y-%m-%d")


@dp.pipeline(
    version="1",
    schedule=dp.Cron("0 3 * * *", tz="Europe/Berlin", overlap="skip", catch_up="last"),
)
async def nightly(keep: int = 7) -> dict[str, str | int]:
    day = await report_day(dp.context().scheduled_at)
    await dp.exec("echo", f"backing up the data of {day}")
    await dp.exec("sh", "-c", f"echo keeping the last {keep} backups")
    return {"day": day, "kept": keep}
