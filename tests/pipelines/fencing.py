"""Pipelines for the fencing tests (issue #14): output that keeps coming while a worker is paused."""

from __future__ import annotations

import durapipe as dp


@dp.pipeline(version="1")
async def chatty() -> str:
    """One command printing a line every 50 ms until $SIDE_DIR/go exists."""
    await dp.exec(
        "sh",
        "-c",
        'echo started; while [ ! -f "$SIDE_DIR/go" ]; do echo tick; sleep 0.05; done; echo finished',
    )
    return "done"
