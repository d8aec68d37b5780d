"""Durations as people read them (5m, 1h30m, 2d): the engine's sleeps and the console's tables.

A module of its own, without imports, so the console renders `show` and `list` without the
engine.
"""

from __future__ import annotations


def fmt_span(seconds: float) -> str:
    """5m, 1h30m, 2d — for 'Sleeping for ...'."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts[:2])
