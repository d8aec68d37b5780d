"""Log rows holding many lines read back as lines, paged by row id, in order, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe._definition import load_target

pytestmark = pytest.mark.asyncio


def _row(line: str) -> dict[str, Any]:
    return {
        "run_id": "run_x",
        "root_run_id": "run_x",
        "step": "1",
        "prefix": "p.exec_1",
        "stream": "out",
        "at": 1.0,
        "line": line,
        "attempt": 1,
    }


async def test_rows_of_many_lines_page_back_as_lines_in_order(store: Any) -> None:
    # Log rows are fenced by their run's attempt: the run they belong to must exist, at attempt 1.
    pdef = load_target(f"{PIPELINES / 'work.py'}:five")
    await dp.Client(store).create_run(pdef, {}, run_id="run_x", owner="wkr_x")
    expected: list[str] = []
    rows = []
    for i in range(300):
        lines = [f"{i}.{j}" for j in range(1 + i % 7)]
        expected += lines
        rows.append(_row("\n".join(lines)))
    await store.write_logs(rows[:150])
    await store.write_logs(rows[150:])
    got: list[str] = []
    last = 0
    while True:
        batch = await store.read_logs("run_x", after_id=last, limit=100)
        if not batch:
            break
        # A short page only at the end; whole rows, a page at a time.
        assert len(batch) >= 100 or len(got) + len(batch) == len(expected)
        assert len({x.id for x in batch}) <= 100
        got += [x.line for x in batch]
        last = batch[-1].id
    assert got == expected
    one = await store.read_logs("run_x", limit=1)
    assert [x.line for x in one] == ["0.0"] and one[0].prefix == "p.exec_1"
