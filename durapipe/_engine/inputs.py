"""``dp.await_input``: a journaled wait for a value a person or program sends."""

from __future__ import annotations

from typing import Any

from .. import _serde
from .._kinds import EventKind, Family, RunStatus
from ..errors import InputTimeout
from .context import current
from .journaled import Call, begin

MISSING: Any = object()
MAX_INPUT_NAME = 200


def replay(call: Call, default: Any) -> Any:
    """A received value, or the recorded timeout (the default, or InputTimeout raised again)."""
    data = _serde.loads(call.done.data) or {}
    if call.done.kind == EventKind.INPUT_TIMEOUT:
        if default is not MISSING:
            return default
        raise InputTimeout(call.name, float(data.get("timeout") or 0))
    return data.get("value")


async def await_input(
    name: str, *, prompt: str | None = None, timeout: float | None = None, default: Any = MISSING
) -> Any:
    """Wait until a value for ``name`` is sent (``durapipe input RUN NAME VALUE``) and return it.

    A value sent before the pipeline asks is kept; several values for one name are taken in order
    by successive calls. While it waits the run is ``waiting``; a worker parks it in the database
    after ``--suspend-after`` seconds. Values are sent with ``durapipe input``,
    ``Client.send_input()`` or ``SyncClient.send_input()``.

    Args:
        name: the input's name, 1-200 characters.
        prompt: a question shown to the person who answers (console, ``durapipe show``).
        timeout: seconds to wait (durable: a resumed run waits only what is left); None: forever.
        default: returned on timeout instead of raising.

    Returns:
        The JSON value sent.

    Raises:
        InputTimeout: the timeout passed without a value and no ``default`` was given.
        NotInPipeline: called outside a running pipeline.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_INPUT_NAME:
        raise ValueError("an input name is a non-empty string of at most 200 characters")
    ctx, branch = current("await_input")
    call = begin(ctx, branch, Family.INPUT, name, f"input_{name}", numbered=False)
    if call.done is not None:
        return replay(call, default)
    requested = call.first(EventKind.INPUT_REQUESTED)
    now = ctx.clock.now()
    if requested is not None:
        deadline = (_serde.loads(requested.data) or {}).get("deadline")
    else:
        deadline = now + timeout if timeout is not None else None
        answer = f"durapipe input {ctx.run_id} {name} VALUE"
        call.emit(
            "info",
            f"Waiting for input '{name}'"
            + (f" ({prompt})" if prompt else "")
            + f" — answer with: {answer}",
        )
        await call.record(
            EventKind.INPUT_REQUESTED,
            {"prompt": prompt, "timeout": timeout, "deadline": deadline},
            run_update={
                "status": RunStatus.WAITING,
                "updated_at": now,
                "waiting_for": _serde.dumps(
                    {"input": name, "prompt": prompt, "deadline": deadline}
                ),
            },
        )
    got: list[tuple[int, Any]] = []

    async def ready() -> bool:
        found = await ctx.host.fetch_input(ctx.run_id, name)
        if found is not None:
            got.append(found)
            return True
        return False

    waiting_for = {"input": name, "prompt": prompt, "deadline": deadline}
    ctx.host.input_waiting(ctx, name, prompt, True)
    try:
        arrived = await ctx.wait(
            call.key,
            deadline=deadline,
            ready=ready,
            status=RunStatus.WAITING,
            waiting_for=waiting_for,
            wake_if_input=name,
        )
    finally:
        ctx.host.input_waiting(ctx, name, prompt, False)
    back = ctx.after_wait()
    if not arrived:
        call.emit(
            "warn",
            f"No value for '{name}' within {timeout:g}s"
            + (": using the default" if default is not MISSING else ""),
        )
        await call.record(EventKind.INPUT_TIMEOUT, {"timeout": timeout}, run_update=back)
        if default is not MISSING:
            return default
        raise InputTimeout(name, float(timeout or 0))
    input_id, value = got[-1]
    ev = call.event(
        EventKind.INPUT_RECEIVED,
        # The value was within the limit when it was sent; the wrapper must not push it over.
        _serde.dumps({"value": value, "input_id": input_id}, limit=_serde.MAX_VALUE_BYTES + 100),
    )
    await ctx.write(ev, run_update=back, consume_input=input_id, consume_seq=ev["seq"])
    call.emit("info", f"Received '{name}': {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = _serde.dumps(value)
    return text if len(text) < 80 else text[:77] + "..."
