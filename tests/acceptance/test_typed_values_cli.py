"""Typed inputs from the command line: converted to the annotated type, or refused in one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from conftest import PIPELINES

TYPED = str(PIPELINES / "typed_values.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_cli_inputs_convert_to_their_annotated_types(dp_cli: Cli) -> None:
    p = dp_cli(
        "run",
        f"{TYPED}:typed_parent",
        "--input",
        "when=2024-05-01T12:30:00+02:00",
        "--input",
        "price=1.50",
        "--input",
        "color=blue",
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == "3.10"


def test_a_cli_input_that_does_not_convert_is_one_line_and_starts_nothing(dp_cli: Cli) -> None:
    p = dp_cli("run", f"{TYPED}:typed_parent", "--input", "when=yesterday", "--input", "price=1")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: input 'when' of pipeline 'typed_parent' must be datetime")
    assert "yesterday" in lines[0]
    p = dp_cli("start", f"{TYPED}:typed_parent", "--input", "when=2024-05-01", "--input", "price=x")
    assert p.returncode != 0
    assert p.stderr.strip().startswith(
        "error: input 'price' of pipeline 'typed_parent' must be Decimal"
    )
    listed = dp_cli("list", "--json", check=True)
    assert json.loads(listed.stdout) == []
