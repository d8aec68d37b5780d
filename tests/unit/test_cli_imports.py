"""`import durapipe` and the CLI's help import only what they use (issue #21: a CLI that answers
at once). Not a timing test: it names the heavy modules that must stay out, so an import added
at the top of a CLI module, of the console or of the package is caught here.

tests/integration/test_cli_imports_db.py does the same for show, list, result and input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_imports import NOT_FOR_HELP, imported, modules_of


def test_import_durapipe_imports_only_its_errors(tmp_path: Path) -> None:
    mods, proc = modules_of(["--version"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("durapipe ")
    assert imported(mods, NOT_FOR_HELP) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["show", "--help"],
        ["list", "--help"],
        ["result", "--help"],
        ["input", "--help"],
        ["worker", "--help"],
        ["schedule", "--help"],
        ["schedule", "add", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_imports_no_client_store_or_engine(tmp_path: Path, args: list[str]) -> None:
    mods, proc = modules_of(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert imported(mods, NOT_FOR_HELP) == []


def test_the_public_api_is_still_all_there() -> None:
    """Names resolve on first use (the package imports them lazily) and stay resolved."""
    import durapipe as dp

    for name in dp.__all__:
        assert getattr(dp, name) is getattr(dp, name), name
    assert set(dp.__all__) <= set(dir(dp))
    with pytest.raises(AttributeError):
        dp.no_such_name  # noqa: B018
