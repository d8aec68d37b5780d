"""Numeric settings: every option and DURAPIPE_* environment variable is checked here, once.

One validator serves the command line and the environment, so ``--lease-ttl nan`` and
``DURAPIPE_LEASE_TTL=nan`` are refused with the same one-line error before anything runs: a
setting out of range is not a slow worker, it breaks the lease protocol (a lease of 0 lets two
workers steal a run from each other forever, a NaN lease is never taken over, a poll interval of
0 spins a core).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import ConfigError

# A lease is renewed every third of its length: below a second the heartbeats (and their
# writes) come faster than a loaded database answers, and a lease lapses under a live worker.
MIN_LEASE_TTL = 1.0


@dataclass(frozen=True)
class Setting:
    option: str | None  # --lease-ttl
    env: str | None  # DURAPIPE_LEASE_TTL
    minimum: float  # the smallest value accepted
    inclusive: bool = True  # False: the value must be above ``minimum``
    integer: bool = False
    unit: str = "seconds"
    why: str = ""  # appended to the error

    def check(self, raw: str | float, *, source: str | None = None) -> float:
        """``raw`` (a string from the environment or a parsed option) as a number in range."""
        name = source or self.option or self.env or "value"
        sep = "=" if name.startswith("DURAPIPE_") else " "
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        ok = math.isfinite(value) and (
            value >= self.minimum if self.inclusive else value > self.minimum
        )
        if ok and self.integer and value != int(value):
            ok = False
        if not ok:
            kind = "a whole number" if self.integer else f"a number of {self.unit}"
            bound = f"{'of at least' if self.inclusive else 'above'} {self.minimum:g}"
            shown = repr(raw) if isinstance(raw, str) else f"{raw:g}"
            raise ConfigError(f"{name}{sep}{shown}: give {kind} {bound}{self.why}")
        return int(value) if self.integer else value

    def from_env(self, default: float) -> float:
        """The environment variable's value (checked), or ``default`` when it is unset or empty."""
        assert self.env is not None
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return default
        return self.check(raw, source=self.env)


LEASE_TTL = Setting(
    "--lease-ttl",
    "DURAPIPE_LEASE_TTL",
    MIN_LEASE_TTL,
    why=" (the lease is renewed every third of it)",
)
POLL_INTERVAL = Setting("--poll-interval", "DURAPIPE_POLL_INTERVAL", 0.0, inclusive=False)
SUSPEND_AFTER = Setting("--suspend-after", "DURAPIPE_SUSPEND_AFTER", 0.0)
DB_TIMEOUT = Setting(None, "DURAPIPE_DB_TIMEOUT", 0.0, inclusive=False)
DB_RETRY_SECONDS = Setting(None, "DURAPIPE_DB_RETRY_SECONDS", 0.0)
GRACE = Setting("--grace", None, 0.0)
TIMEOUT = Setting("--timeout", None, 0.0, inclusive=False)
CONCURRENCY = Setting("--concurrency", None, 1, integer=True, unit="runs")
LIMIT = Setting("--limit", None, 1, integer=True, unit="runs")

ENV_SETTINGS = (LEASE_TTL, POLL_INTERVAL, SUSPEND_AFTER, DB_TIMEOUT, DB_RETRY_SECONDS)


def check_environment() -> None:
    """Refuse a DURAPIPE_* number out of range before a command does anything."""
    for s in ENV_SETTINGS:
        s.from_env(0.0)


def db_timeout() -> float:
    """How long one statement may wait on the database, seconds (DURAPIPE_DB_TIMEOUT, 30):
    a PostgreSQL statement, or a SQLite connection for another process's write lock."""
    return DB_TIMEOUT.from_env(30.0)


def db_retry_seconds() -> float:
    """How long an unreachable or locked database is retried (DURAPIPE_DB_RETRY_SECONDS, 60)."""
    return DB_RETRY_SECONDS.from_env(60.0)
