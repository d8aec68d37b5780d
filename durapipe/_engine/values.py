"""``dp.now``, ``dp.uuid4``, ``dp.random``: values recorded so replay sees the same."""

from __future__ import annotations

import random as _random
import time
import uuid as _uuid
from collections.abc import Callable
from typing import Any

from .. import _serde
from .._kinds import EventKind, Family
from .context import _CTX, current
from .journaled import begin


async def _value(name: str, make: Callable[[], Any]) -> Any:
    ctx, branch = current(name)
    call = begin(ctx, branch, Family.VALUE, name)
    if call.done is not None:
        return (_serde.loads(call.done.data) or {}).get("value")
    value = make()
    await ctx.write(call.event(EventKind.VALUE_RECORDED, _serde.dumps({"value": value})))
    return value


async def now() -> float:
    """The current time (seconds since the epoch), recorded so replay sees the same."""
    ctx = _CTX.get()
    return float(await _value("now", ctx.clock.now if ctx else time.time))


async def uuid4() -> str:
    """A random UUID, recorded so replay sees the same."""
    return str(await _value("uuid4", lambda: str(_uuid.uuid4())))


async def random() -> float:
    """A random float in [0, 1), recorded so replay sees the same."""
    return float(await _value("random", _random.random))
