"""docs/cli.md is generated from the typer app; it must match the commands as they are now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generate() -> str:
    spec = importlib.util.spec_from_file_location(
        "durapipe_docs_gen_cli", ROOT / "docs" / "gen_cli.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.generate())


def test_cli_reference_is_up_to_date() -> None:
    fresh = _generate()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == fresh, (
        "docs/cli.md does not match the CLI: run `python docs/gen_cli.py > docs/cli.md`"
    )


def test_cli_reference_covers_every_command() -> None:
    text = _generate()
    for command in (
        "run",
        "resume",
        "start",
        "worker",
        "show",
        "input",
        "stop",
        "cancel",
        "db upgrade",
        "upgrade check",
    ):
        assert f"## durapipe {command}\n" in text
    assert "`DURAPIPE_DATABASE_URL`" in text and "`DURAPIPE_LEASE_TTL`" in text
