"""``@dp.step``: a function whose result is journaled, with retries."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from .. import _serde, _typed
from .._kinds import EventKind, Family
from ..errors import RunInterrupted, SerializationError, StepFailed
from .context import _CTX, _IN_STEP, _STEP_LOG, current
from .failures import error_data
from .journaled import Call, begin

# Every step passes here: the members are bound once (reading one off its Enum class costs
# about 50 ns on Python 3.11, as much as the rest of a replayed call's checks).
_STEP = Family.STEP
_STARTED, _RETRY = EventKind.STEP_STARTED, EventKind.STEP_RETRY
_COMPLETED, _FAILED = EventKind.STEP_COMPLETED, EventKind.STEP_FAILED


def replay(call: Call) -> Any:
    """A completed step's recorded result, or its recorded failure raised again."""
    done = call.done
    data = _serde.loads(done.data) or {}
    if done.kind == _FAILED:
        err = data.get("error", {})
        raise call.failure(
            StepFailed(done.label or call.key, err.get("type", "Error"), err.get("message", ""))
        )
    return data.get("result")


async def call_step(
    fn: Callable[..., Any], opts: Any, is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    ctx = _CTX.get()
    if ctx is None or _IN_STEP.get() is not None:
        # Outside a run (or nested in another step): a plain call.
        if is_async:
            return await fn(*args, **kwargs)
        return fn(*args, **kwargs)
    ctx, branch = current(opts.name, step=True)
    call = begin(ctx, branch, _STEP, opts.name, opts.name)
    typed = _typed.result_adapter(fn)  # None for a plain JSON result: decoded as it is
    if call.done is not None:
        if typed is None:
            return replay(call)
        return _typed.decode(typed, replay(call), what=f"the result of step {call.label}")
    key, label = call.key, call.label
    assert label is not None
    evs = call.events
    tries = sum(1 for e in evs if e.kind == _RETRY)
    if any(e.kind == _STARTED for e in evs):
        call.emit("warn", "running again: an earlier attempt did not finish")
    # The start is recorded so that a step killed mid-way shows up as an attempt; it is not
    # waited for (see RunContext.post), so it costs no commit of its own.
    call.post(_STARTED)
    token = _IN_STEP.set(f"{ctx.run_id}.{key}")
    log_token = _STEP_LOG.set((key, label))
    try:
        while True:
            tries += 1
            try:
                if is_async:
                    result = await fn(*args, **kwargs)
                else:
                    result = await asyncio.to_thread(
                        contextvars.copy_context().run, fn, *args, **kwargs
                    )
                text = _serde.dumps(  # secrets masked
                    result, what=f"the result of step {label} ({type(result).__name__})"
                )
                if typed is not None:  # decoded from what is stored, as on replay: equal
                    value = _typed.decode(
                        typed, _serde.loads(text), what=f"the result of step {label}"
                    )
            except (RunInterrupted, asyncio.CancelledError):
                raise
            except Exception as exc:
                if isinstance(exc, SerializationError):
                    tries = opts.retries + 1  # retrying cannot fix the type
                err = error_data(exc)
                if tries <= opts.retries:
                    delay = min(opts.retry_delay * (opts.backoff ** (tries - 1)), opts.max_delay)
                    call.emit(
                        "warn",
                        f"attempt {tries} failed: {err['type']}: {err['message']}; retrying in {delay:g}s",
                    )
                    await call.record(_RETRY, {"try": tries, "error": err})
                    await ctx.clock.sleep(delay)
                    continue
                call.emit("error", f"failed: {err['type']}: {err['message']}")
                for tb_line in err["traceback"].rstrip().splitlines():
                    call.emit("error", tb_line)
                await call.record(_FAILED, {"error": err, "tries": tries})
                raise call.failure(StepFailed(label, err["type"], err["message"])) from exc
            await ctx.write(call.event(_COMPLETED, '{"result":' + text + "}"))
            return _serde.loads(text) if typed is None else value
    finally:
        _IN_STEP.reset(token)
        _STEP_LOG.reset(log_token)
