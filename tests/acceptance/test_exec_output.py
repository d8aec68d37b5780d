"""An exec's many lines: printed live, stored, and shown by `durapipe logs` alike, every one once."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \[(?P<prefix>[^\]]+?) *\](?P<mark>[ !])(?P<text>.*)$"
)

PIPELINE = """
import durapipe as dp

@dp.pipeline(version="1")
async def loud(lines: int) -> int:
    res = await dp.exec("sh", "-c", f"seq 1 {lines}; echo to-stderr >&2; printf 'a\\\\r\\\\nno-newline'")
    return len(res.stdout)
"""


def test_an_exec_of_many_lines_prints_and_logs_every_line_once(dp_cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "loud.py").write_text(PIPELINE)
    n = 30_000
    p = dp_cli("run", "loud.py:loud", "--input", f"lines={n}", check=True)
    rid, *live, result = p.stdout.splitlines()
    parsed = [LINE.match(line) for line in live]
    assert all(parsed), [x for x, m in zip(live, parsed, strict=True) if not m][:5]
    out = [m["text"] for m in parsed if m and m["mark"] == " " and m["prefix"] == "loud.exec_1"]
    assert out[1 : n + 1] == [str(i) for i in range(1, n + 1)]  # after the "$ sh -c ..." line
    assert out[n + 1 : n + 3] == ["a", "no-newline"]
    assert [m["text"] for m in parsed if m and m["mark"] == "!"] == ["to-stderr"]
    assert int(result) == 64 * 1024  # the history keeps the last 64 KiB of stdout
    # `durapipe logs` shows exactly what was printed live: same lines, same times, same order.
    assert dp_cli("logs", rid, check=True).stdout.splitlines() == live
    records = [json.loads(x) for x in dp_cli("logs", rid, "--json", check=True).stdout.splitlines()]
    assert [r["line"] for r in records] == [m["text"] for m in parsed if m]
