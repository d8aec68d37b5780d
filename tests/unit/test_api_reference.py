"""docs/api.md is generated from durapipe.__all__ and its docstrings; it must match them now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "durapipe_docs_gen_api", ROOT / "docs" / "gen_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    fresh = str(_gen().generate())
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == fresh, (
        "docs/api.md does not match the docstrings: run `python docs/gen_api.py > docs/api.md`"
    )


def test_api_reference_covers_every_public_name_and_method() -> None:
    import durapipe as dp

    text = str(_gen().generate())
    for name in dp.__all__:
        assert f"### `dp.{name}`\n" in text, name
    for method in ("start", "get", "list", "events", "result", "send_input", "stop", "cancel"):
        assert f"#### `Client.{method}`\n" in text and f"#### `SyncClient.{method}`\n" in text
    # typed signatures, as a user reads them
    assert (
        "run_subpipeline(pipeline: PipelineDef[P, R], /, *args: P.args, **inputs: P.kwargs) -> R"
        in text
    )
    assert " at 0x" not in text  # no object addresses: the file would change on every run
    assert "#### `Client.create_run`" not in text  # internal helpers stay out
