"""The built wheel works on its own: it migrates a database, runs a pipeline, and plugs into pytest.

The wheel is installed (not editable) into a fresh virtualenv that sees the system's packages,
so its dependencies need no download; everything runs from a temporary directory without
PYTHONPATH, and the test checks that the durapipe imported there is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

USER_TEST = """
import pytest
import durapipe as dp
from durapipe.testing import run_pipeline


@dp.pipeline(version="1")
async def nap() -> str:
    await dp.sleep(7 * 86400)
    return "a week later"


@pytest.mark.asyncio
async def test_nap(durapipe_store, durapipe_clock):
    assert dp.__file__.startswith(VENV)
    view = await run_pipeline(durapipe_store, nap, clock=durapipe_clock)
    assert view.output == "a week later"
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{' '.join(argv)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_wheel_ships_its_migrations_and_runs_hello(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            ".",
        ],
        cwd=ROOT,
    )
    [wheel] = dist.glob("durapipe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "durapipe/_migrations/env.py" in names
    assert any(n.startswith("durapipe/_migrations/versions/0001") for n in names)
    assert "[pytest11]" in entry_points and "durapipe = durapipe.testing" in entry_points

    venv = tmp_path / "venv"
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        cwd=tmp_path,
    )
    py = str(venv / "bin" / "python")
    # The system's pip, run by the venv's interpreter, installs into the venv.
    _run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(wheel),
        ],
        cwd=tmp_path,
    )

    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "hello.py", work / "examples" / "hello.py")
    # (PYTEST_*: under pytest-xdist the inner pytest would think it is a worker too.)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DURAPIPE_", "PYTHON", "PYTEST_"))
    }
    env["NO_COLOR"] = "1"

    where = _run(
        [
            py,
            "-c",
            "import durapipe, durapipe._store.migrate as m; print(durapipe.__file__); print(m.migrations_dir())",
        ],
        cwd=work,
        env=env,
    ).split()
    site = venv / "lib"
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in where), where
    assert where[1].endswith(os.path.join("durapipe", "_migrations"))

    durapipe = str(venv / "bin" / "durapipe")
    out = _run([durapipe, "db", "upgrade", "--database-url", "sqlite:///x.db"], cwd=work, env=env)
    assert "schema revision" in out
    out = _run(
        [
            durapipe,
            "run",
            "examples/hello.py:hello",
            "--input",
            "nap=0",
            "--database-url",
            "sqlite:///x.db",
        ],
        cwd=work,
        env=env,
    )
    assert json.loads(out.strip().splitlines()[-1])["greeting"] == "Hello, world!"

    # The pytest plugin comes with the wheel's entry point: no -p, no conftest.
    (work / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    (work / "test_user.py").write_text(f"VENV = {str(venv.resolve())!r}\n" + USER_TEST)
    out = _run(
        [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"], cwd=work, env=env
    )
    assert "1 passed" in out
