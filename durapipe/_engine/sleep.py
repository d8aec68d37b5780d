"""``dp.sleep``: a durable timer."""

from __future__ import annotations

import time
from datetime import timedelta

from .. import _serde
from .._kinds import EventKind, Family, RunStatus
from .._spans import fmt_span
from .context import current
from .journaled import begin


async def sleep(duration: float | timedelta) -> None:
    """Sleep for ``duration`` (seconds or a ``timedelta``) on a durable timer (``dp.sleep``).

    The wake-up time is recorded: a run stopped, crashed or resumed elsewhere sleeps only what
    is left, and a replayed sleep that has fired returns at once. A worker parks a long sleep in
    the database (the run is ``sleeping``) and wakes it when it is due.

    Raises:
        ValueError: the duration is negative or not a number.
        NotInPipeline: called outside a running pipeline.
    """
    seconds = duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"dp.sleep needs a duration of 0 or more seconds, got {duration!r}")
    ctx, branch = current("sleep")
    call = begin(ctx, branch, Family.TIMER, "sleep", "sleep")
    if call.done is not None:
        return
    label = call.label
    started = call.first(EventKind.TIMER_STARTED)
    now = ctx.clock.now()
    if started is not None:
        wake_at = float((_serde.loads(started.data) or {})["wake_at"])
        left = wake_at - now
        if left > 0:
            call.emit(
                "info",
                f"Sleeping for the remaining {fmt_span(left)} (until {_clock_str(wake_at)})",
            )
    else:
        wake_at = now + seconds
        call.emit("info", f"Sleeping for {fmt_span(seconds)} (until {_clock_str(wake_at)})")
        await call.record(
            EventKind.TIMER_STARTED,
            {"seconds": seconds, "wake_at": wake_at},
            run_update={
                "status": RunStatus.SLEEPING,
                "wake_at": wake_at,
                "updated_at": now,
                "waiting_for": _serde.dumps({"timer": label, "wake_at": wake_at}),
            },
        )
    await ctx.wait(
        call.key,
        deadline=wake_at,
        ready=None,
        status=RunStatus.SLEEPING,
        waiting_for={"timer": label, "wake_at": wake_at},
    )
    await ctx.write(call.event(EventKind.TIMER_FIRED), run_update=ctx.after_wait())


def _clock_str(at: float) -> str:
    lt = time.localtime(at)
    if time.localtime().tm_yday != lt.tm_yday or at - time.time() > 86400:
        return time.strftime("%Y-%m-%d %H:%M:%S", lt)
    return time.strftime("%H:%M:%S", lt)
