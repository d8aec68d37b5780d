"""The summary under `durapipe list`: counts by status, a capped one shown as "N+"."""

from __future__ import annotations

import io

from rich.console import Console

from durapipe._console import render_list


def _text(counts: dict[str, int], cap: int | None) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(
        render_list([], counts, now=0.0, count_cap=cap)
    )
    return out.getvalue()


def test_a_count_above_the_cap_reads_as_more_than_the_cap() -> None:
    text = _text({"completed": 10_001, "failed": 3, "pending": 10_000}, 10_000)
    assert "completed: 10000+" in text and "failed: 3" in text and "pending: 10000" in text
    assert "pending: 10000+" not in text


def test_exact_counts_and_no_runs() -> None:
    assert "completed: 10001" in _text({"completed": 10_001}, None)
    assert "no runs" in _text({}, 10_000)
