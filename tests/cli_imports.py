"""What a `durapipe` command imports: run it in a fresh interpreter, list ``sys.modules`` after.

Shared by tests/unit/test_cli_imports.py (no database) and
tests/integration/test_cli_imports_db.py (show, list, result, input on both databases).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run the command as `python -m durapipe ARGS` does, then write the modules it imported.
_PROBE = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["durapipe", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("durapipe", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

# What no command that only reads (or answers one input) needs: the engine and what runs
# pipelines, migrations, cron parsing, the web UI, tracing, the async SQLite driver.
NEVER = [
    "alembic",
    "cronsim",
    "aiosqlite",
    "anyio",
    "opentelemetry",
    "starlette",
    "jinja2",
    "durapipe._engine",
    "durapipe._runner",
    "durapipe._local",
    "durapipe._execution",
    "durapipe._typed",
    "durapipe._exec",
    "durapipe._ui",
    "durapipe.tracing",
    "durapipe._store.migrate",
]

# ... and what help text does not need either: the client, the store and its drivers, asyncio.
NOT_FOR_HELP = [
    *NEVER,
    "asyncio",
    "sqlalchemy",
    "asyncpg",
    "sqlite3",
    "durapipe._client",
    "durapipe._store.store",
    "durapipe._console",
    "durapipe._definition",
]


def modules_of(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules ``durapipe ARGS`` imported, and how it ended."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    base = dict(env if env is not None else os.environ)
    base["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else ""
    )
    for key in [k for k in base if k.startswith("OTEL_")]:  # tracing stays off
        del base[key]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env=base,
    )
    assert out.exists(), f"durapipe {' '.join(args)} did not finish: {proc.stderr}"
    return set(json.loads(out.read_text())), proc


def imported(modules: set[str], names: list[str]) -> list[str]:
    """The ``names`` (or modules inside them) that were imported."""
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))
