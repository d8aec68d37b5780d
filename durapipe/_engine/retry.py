"""Durable retries: the policy of ``@dp.step``/``dp.exec`` and the wait before a next try.

A failed try that will be tried again records a ``step_retry`` event holding the failure, the
delay and the instant the next try is due (``retry_at``). The jitter is drawn once, live, and
the instant recorded: an execution that continues the call later (after a crash, a stop, or a
suspension) waits out only what is left of the recorded delay, never a new one. A long delay
suspends the run like ``dp.sleep`` (its worker is free meanwhile).
"""

from __future__ import annotations

import time
from typing import Any

from .. import _serde
from .._kinds import EventKind, RunStatus
from .._policy import RetryPolicy
from .journaled import Call


def pending_retry(call: Call) -> float | None:
    """When the call's last record is a scheduled retry: the instant its next try is due."""
    if not call.events:
        return None
    last = call.events[-1]
    if last.kind != EventKind.STEP_RETRY:
        return None
    at = (_serde.loads(last.data) or {}).get("retry_at")
    return float(at) if at is not None else None


async def schedule_retry(
    call: Call, policy: RetryPolicy, tries: int, err: dict[str, Any], **extra: Any
) -> float:
    """Record failed try ``tries`` and when the next is due. -> that instant."""
    delay = policy.delay(tries)
    retry_at = call.ctx.clock.now() + delay
    call.emit(
        "warn",
        f"attempt {tries} failed: {err['type']}: {err['message']}; "
        f"retrying in {delay:.3g}s (at {time.strftime('%H:%M:%S', time.localtime(retry_at))})",
    )
    data = {"try": tries, "error": err, "delay": round(delay, 3), "retry_at": retry_at, **extra}
    await call.record(EventKind.STEP_RETRY, data)
    return retry_at


async def wait_retry(call: Call, retry_at: float) -> None:
    """Wait until ``retry_at`` on the durable clock; a long wait suspends the run."""
    if retry_at <= call.ctx.clock.now():
        return
    await call.ctx.wait(
        call.key,
        deadline=retry_at,
        ready=None,
        status=RunStatus.SLEEPING,
        waiting_for={"retry": call.label, "wake_at": retry_at},
    )
