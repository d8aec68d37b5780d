"""``dp.set_event``: state a run publishes, read by anyone without replaying it."""

from __future__ import annotations

from typing import Any

from .. import _serde
from .._kinds import EventKind, Family
from .context import current
from .journaled import begin
from .messages import check_name


async def set_event(key: str, value: Any) -> None:
    """Publish ``value`` under ``key`` for this run: the latest value wins.

    Anyone reads it without replaying the run and without touching its lease, whether the run
    is running, waiting or finished: ``Client.get_event(run_id, key, wait=...)``, ``durapipe
    events RUN [--wait KEY]``, ``durapipe show``. Journaled: the value and the record of setting
    it are one write, so what readers see always matches the run's history.

    Args:
        key: a short identifier (letters, digits, ``_ - . :``; at most 100 characters).
        value: any JSON value (at most 1 MB encoded).

    Raises:
        ValueError: ``key`` is not a short identifier.
        SerializationError: ``value`` is not JSON or is too large.
        NotInPipeline: called outside a running pipeline.
    """
    check_name("the key", key)
    text = _serde.dumps(value, what=f"event {key!r}")
    ctx, branch = current("set_event")
    call = begin(ctx, branch, Family.EVENT, key, f"event_{key}", numbered=False)
    if call.done is not None:
        return
    ev = call.event(
        EventKind.EVENT_SET,
        _serde.dumps({"value": value}, limit=_serde.MAX_VALUE_BYTES + 100),
    )
    row = {
        "run_id": ctx.run_id,
        "key": key,
        "value": text,
        "seq": ev["seq"],
        "updated_at": ev["at"],
    }
    await ctx.write(ev, publish=[row])
