"""Prefixed, time-sortable, lower-case ids: ``run_`` + 20 characters of Crockford base32.

The first 10 characters are milliseconds since the epoch (sortable until the year 10889),
the last 10 are random (50 bits).
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


def _b32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(7), "big") >> 6  # 50 bits
    return f"{prefix}_{_b32(ms, 10)}{_b32(rand, 10)}"


def validate_run_id(run_id: str) -> str | None:
    """Return a reason the id is unusable, or None when it is fine."""
    if not _USER_ID.match(run_id):
        return (
            "a run id is 1-128 characters of letters, digits and _ . : - "
            "and starts with a letter or digit"
        )
    return None
