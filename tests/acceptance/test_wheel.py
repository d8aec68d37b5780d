"""The built wheel works on its own: it migrates a database, runs a pipeline, and plugs into pytest.

The wheel is installed (not editable) into a fresh virtualenv whose dependencies are this
interpreter's: a .pth file lists this environment's site-packages, so nothing is downloaded, and
it works the same whether pytest runs from a virtualenv or from a global Python. A directory a .pth
names is not a site directory, so the .pth files there (this checkout's editable install) are not
processed. Everything runs from a temporary directory without PYTHONPATH, and the test checks that
the durapipe imported there is the wheel's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import ROOT

USER_TEST = """
from pathlib import Path

import pytest
import durapipe as dp
from durapipe.testing import run_pipeline


@dp.pipeline(version="1")
async def nap() -> str:
    await dp.sleep(7 * 86400)
    return "a week later"


@pytest.mark.asyncio
async def test_nap(durapipe_store, durapipe_clock):
    assert Path(dp.__file__).resolve().is_relative_to(VENV)
    view = await run_pipeline(durapipe_store, nap, clock=durapipe_clock)
    assert view.output == "a week later"
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{' '.join(argv)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_wheel_ships_its_migrations_and_runs_hello(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # hatchling (the build backend) comes with the dev extra; without it pip fetches it into an
    # isolated build environment, which needs the package index.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(dist), "."],
        cwd=ROOT,
    )
    [wheel] = dist.glob("durapipe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "durapipe/_migrations/env.py" in names
    assert "durapipe/py.typed" in names  # PEP 561: users type-check against it
    assert any(n.startswith("durapipe/_migrations/versions/0001") for n in names)
    assert "[pytest11]" in entry_points and "durapipe = durapipe.testing" in entry_points

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = str(venv / "bin" / "python")
    inner = Path(
        _run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
        ).strip()
    )
    # This environment's packages (the dependencies, pip, pytest) after the venv's own.
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (inner / "_outer_env.pth").write_text("".join(f"{p}\n" for p in outer))
    # This environment's pip, run by the venv's interpreter, installs into the venv.
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

    # A directory of the user's, nothing to do with this checkout.
    work = tmp_path / "work"
    work.mkdir()
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
    assert all(Path(p).resolve().is_relative_to(inner.resolve()) for p in where), where
    assert where[1].endswith(os.path.join("durapipe", "_migrations"))

    durapipe = str(venv / "bin" / "durapipe")
    out = _run([durapipe, "db", "upgrade", "--database-url", "sqlite:///x.db"], cwd=work, env=env)
    assert "schema revision" in out
    out = _run(
        [
            durapipe,
            "run",
            f"{ROOT / 'examples' / 'hello.py'}:hello",
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
    (work / "test_user.py").write_text(f"VENV = {str(inner.resolve())!r}\n" + USER_TEST)
    out = _run(
        [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"], cwd=work, env=env
    )
    assert "1 passed" in out
