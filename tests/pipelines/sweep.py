"""A pipeline for the bad-input sweep (tests/integration/test_cli_bad_input_sweep.py)."""

from __future__ import annotations

from typing import Any

import durapipe as dp


@dp.pipeline(name="echo", version="1")
async def echo(**inputs: Any) -> dict[str, Any]:
    """Takes any inputs and returns them."""
    return inputs
