"""Failures as data: what is stored of an error, and which journaled call an error came from."""

from __future__ import annotations

import traceback
from typing import Any, TypeVar

from .._secrets import scrub

E = TypeVar("E", bound=BaseException)

# The step key of the journaled call a failure was raised by (StepFailed, ExecFailed), so the
# run's failure can name it and resume can retry that call. (Exceptions take no weak references,
# so it is an attribute, named apart from anything else durapipe sets.)
_STEP_KEY = "__durapipe_step_key__"


def tag_step(exc: E, key: str) -> E:
    """Mark ``exc`` as the failure of the journaled call at step ``key``; returns ``exc``."""
    setattr(exc, _STEP_KEY, key)
    return exc


def step_of(exc: BaseException) -> str | None:
    """The step key :func:`tag_step` gave ``exc``, if any."""
    key = getattr(exc, _STEP_KEY, None)
    return str(key) if key else None


def error_message(exc: BaseException) -> str:
    """``str(exc)``, or what can be said when its ``__str__`` raises: the error is still stored
    and the run still ends (a broken message must not leave the run ``running``)."""
    try:
        return str(exc)
    except Exception as inner:
        try:
            why = f"{type(inner).__name__}: {inner}"
        except Exception:
            why = type(inner).__name__
        return f"its message could not be rendered ({why})"


def error_data(exc: BaseException, *, step: str | None = None) -> dict[str, Any]:
    """A stored error: type, message and traceback. Every failure recorded (a step's, a run's)
    is turned into data here."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # Trim to user code: drop frames from durapipe's own modules.
    noise = ("/durapipe/_", "asyncio/", "/concurrent/futures/", "/threading.py")
    kept = [line for line in tb if not any(n in line for n in noise)]
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": error_message(exc),
        # Masked before it is cut: a cut through a secret would leave a piece no mask matches.
        "traceback": scrub("".join(kept))[-8000:],
    }
    if step is not None:
        data["step"] = step
    return data
