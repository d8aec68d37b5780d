"""``@dp.step``: a function whose result is journaled, with durable retries and a timeout."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from .. import _serde, _typed
from .._kinds import EventKind, Family
from .._policy import RetryPolicy
from ..errors import RunInterrupted, SerializationError, StepFailed, StepTimeout
from .context import _CTX, _IN_STEP, _STEP_LOG, _STEP_TRY, current
from .failures import error_data
from .journaled import Call, begin
from .retry import pending_retry, schedule_retry, wait_retry

# Every step passes here: the members are bound once (reading one off its Enum class costs
# about 50 ns on Python 3.11, as much as the rest of a replayed call's checks).
_STEP = Family.STEP
_STARTED, _RETRY = EventKind.STEP_STARTED, EventKind.STEP_RETRY
_COMPLETED, _FAILED = EventKind.STEP_COMPLETED, EventKind.STEP_FAILED
# Results returned as they are: JSON holds them exactly (a float by its repr; NaN and infinities
# are refused), so the live value is the replayed one without decoding what was just encoded.
# Not str: a string holding a secret is stored (and replayed) masked.
_EXACT = frozenset({int, float, bool, type(None)})


def replay(call: Call) -> Any:
    """A completed step's recorded result, or its recorded failure raised again."""
    done = call.done
    data = _serde.loads(done.data) or {}
    if done.kind == _FAILED:
        err = data.get("error", {})
        raise call.failure(_failed(done.label or call.key, err, data.get("timeout")))
    return data.get("result")


def _failed(label: str, err: dict[str, Any], timeout: float | None) -> StepFailed:
    """What the pipeline sees of a step that failed for good (live and on replay alike)."""
    if timeout is not None:
        return StepTimeout(label, float(timeout))
    return StepFailed(label, err.get("type", "Error"), err.get("message", ""))


async def _try(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    label: str,
) -> Any:
    """One try of the body: an async body is cancelled at its timeout; a sync body's thread
    cannot be killed, so the try fails at the timeout and the thread runs on, unwaited."""
    if is_async:
        work = fn(*args, **kwargs)
    else:
        work = asyncio.to_thread(contextvars.copy_context().run, fn, *args, **kwargs)
    if timeout is None:
        return await work
    try:
        async with asyncio.timeout(timeout) as limit:
            return await work
    except TimeoutError:
        if limit.expired():
            raise StepTimeout(label, timeout) from None
        raise


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
    policy: RetryPolicy = opts.policy
    evs = call.events
    tries = sum(1 for e in evs if e.kind == _RETRY)
    retry_at = pending_retry(call)
    if retry_at is None and any(e.kind == _STARTED for e in evs):
        call.emit("warn", "running again: an earlier attempt did not finish")
    token = _IN_STEP.set(f"{ctx.run_id}.{key}")
    log_token = _STEP_LOG.set((key, label))
    try:
        while True:
            if retry_at is not None:
                # The next try waits out the recorded delay, whichever execution runs it.
                await wait_retry(call, retry_at)
                retry_at = None
            tries += 1
            # The start is recorded so that a step killed mid-way shows up as an attempt; it is
            # not waited for (see RunContext.post), so it costs no commit of its own.
            call.post(_STARTED)
            try_token = _STEP_TRY.set(tries)
            try:
                if is_async and opts.timeout is None:  # the common case, without a frame more
                    result = await fn(*args, **kwargs)
                else:
                    result = await _try(fn, is_async, args, kwargs, opts.timeout, label)
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
                err = error_data(exc)
                timed_out = opts.timeout if isinstance(exc, StepTimeout) else None
                # Retrying cannot fix the type of a result.
                if not isinstance(exc, SerializationError) and policy.may_retry(tries, exc):
                    retry_at = await schedule_retry(call, policy, tries, err)
                    continue
                call.emit("error", f"failed: {err['type']}: {err['message']}")
                for tb_line in err["traceback"].rstrip().splitlines():
                    call.emit("error", tb_line)
                await call.record(_FAILED, {"error": err, "tries": tries, "timeout": timed_out})
                raise call.failure(_failed(label, err, timed_out)) from exc
            finally:
                _STEP_TRY.reset(try_token)
            await ctx.write(call.event(_COMPLETED, '{"result":' + text + "}"))
            if typed is not None:
                return value
            if type(result) in _EXACT:  # its JSON decodes to an equal value of the same type
                return result
            return _serde.loads(text)
    finally:
        _IN_STEP.reset(token)
        _STEP_LOG.reset(log_token)
