"""Retry policies and timeouts as users give them: checked once, at decoration time.

Plain values with no engine imports, so ``_definition`` (the decorators) can use them; the
engine's side of a retry (recording it, waiting for it) is ``_engine/retry.py``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failing call is tried again (see ``@dp.step``)."""

    retries: int | None = 0  # None: without limit
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    non_retryable: tuple[type[BaseException], ...] = ()

    def may_retry(self, tries: int, exc: BaseException | None = None) -> bool:
        """Whether try number ``tries`` (1-based), which failed with ``exc``, is tried again."""
        if exc is not None and self.non_retryable and isinstance(exc, self.non_retryable):
            return False
        return self.retries is None or tries <= self.retries

    def delay(self, tries: int) -> float:
        """The delay after failed try ``tries``: exponential, capped, with jitter drawn now."""
        try:
            base = self.retry_delay * self.backoff ** (tries - 1)
        except OverflowError:
            base = self.max_delay
        base = min(base, self.max_delay)
        if self.jitter:
            # "Equal jitter": half the delay is kept, the other half drawn, so retries of many
            # calls that failed together spread out but none comes back at once.
            base = base / 2 + random.random() * base / 2
        return base


def check_timeout(what: str, timeout: Any) -> float | None:
    """``timeout`` as seconds (None: none), or ConfigError naming ``what``."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(
            f"{what}: timeout must be seconds (a number or a timedelta), got {timeout!r}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(
            f"{what}: timeout must be a finite number of seconds above 0, got {timeout!r}"
        )
    return float(seconds)


def make_policy(
    what: str,
    *,
    retries: Any,
    retry_delay: Any,
    backoff: Any,
    max_delay: Any,
    jitter: Any,
    non_retryable: Any = (),
) -> RetryPolicy:
    """Check retry options as a user gave them. -> the policy, or ConfigError saying what is wrong."""
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise ConfigError(
            f"{what}: retries must be 0 or more (None: without limit), got {retries!r}"
        )
    for name, value, low in (
        ("retry_delay", retry_delay, 0.0),
        ("backoff", backoff, 1.0),
        ("max_delay", max_delay, 0.0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < low
        ):
            raise ConfigError(
                f"{what}: {name} must be a finite number, {low:g} or more, got {value!r}"
            )
    if not isinstance(jitter, bool):
        raise ConfigError(f"{what}: jitter must be True or False, got {jitter!r}")
    kinds = (
        non_retryable
        if isinstance(non_retryable, (tuple, list, set, frozenset))
        else (non_retryable,)
    )
    for k in kinds:
        if not (isinstance(k, type) and issubclass(k, BaseException)):
            raise ConfigError(
                f"{what}: non_retryable takes exception classes (e.g. (ValueError, KeyError)), got {k!r}"
            )
    return RetryPolicy(
        retries=retries,
        retry_delay=float(retry_delay),
        backoff=float(backoff),
        max_delay=float(max_delay),
        jitter=jitter,
        non_retryable=tuple(kinds),
    )
