"""durapipe type-checks as a user's code sees it: ``mypy --strict`` on the examples, the README's
pipeline, and typed uses of the API; and mypy reports the mistakes the types are there to catch.

One mypy run (in a subprocess, from a temporary directory) checks every file; durapipe is found
through MYPYPATH and followed silently, as an installed typed package is. Each line of the
negative file that mypy must reject ends with ``# E: code``; no other line may be reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mypy")

# What the README's snippet leaves to the reader: the repository and the child pipeline.
README_PRELUDE = """

REPO = "https://example.com/app.git"


@dp.pipeline(version="1")
async def build_image(sha: str) -> str:
    return f"registry.example.com/app:{sha}"
"""

# Typed uses a user writes; mypy --strict must accept all of them (reveal_type is checked too).
GOOD = """
from datetime import timedelta
from typing import Any, assert_type

import durapipe as dp


@dp.step
def double(n: int) -> int:
    return 2 * n


@dp.step(retries=2, retry_delay=0.1)
async def label(n: int) -> str:
    return f"n={n}"


@dp.pipeline(version="1")
async def child(sha: str, n: int = 1) -> list[str]:
    return [sha] * n


@dp.pipeline(name="parent", version="1", pin=True)
async def parent(sha: str) -> dict[str, object]:
    assert_type(await double(2), int)                       # a sync step, awaited
    assert_type(await label(2), str)                        # an async step
    assert_type(await dp.run_subpipeline(child, sha=sha), list[str])
    assert_type(await dp.run_subpipeline(child, sha, 2), list[str])
    assert_type(await dp.run_subpipeline("child", sha=sha), Any)
    out = await dp.exec("echo", dp.secret("TOKEN"), env={"T": dp.secret("TOKEN")}, timeout=5)
    assert_type(out, dp.ExecResult)
    await dp.sleep(1.5)
    await dp.sleep(timedelta(minutes=1))
    ok: Any = await dp.await_input("approve", prompt="ok?", timeout=60, default=False)
    both = await dp.gather(double(1), label(2), limit=2)
    if await dp.patched("v2"):
        dp.logger.info("%s %s", dp.context().run_id, await dp.now())
    return {"ok": ok, "both": both, "id": await dp.uuid4(), "r": await dp.random()}


@dp.pipeline(version="1")
async def handles(sha: str, rounds: int = 0) -> int:
    h = await dp.start_subpipeline(child, sha=sha)
    assert_type(h, dp.ChildHandle[list[str]])
    assert_type(await h.result(), list[str])
    named = await dp.start_subpipeline(child, sha=sha, run_id="c-1", detached=True)
    assert_type(await named.result(), list[str])
    assert_type(await dp.start_subpipeline(child, sha, detached=True), dp.ChildHandle[list[str]])
    await h.cancel()
    run_id: str = h.run_id
    await dp.tag(env="prod", n=3, on=True)
    if rounds < 10:
        await dp.continue_as_new(sha=run_id, rounds=rounds + 1)
    return rounds


async def program(url: str) -> None:
    async with await dp.Client.connect(url) as client:
        assert_type(await client.start(handles, sha="a", tags={"env": "prod"}), str)
        assert_type(await client.list(tags={"env": "prod"}), list[dp.RunView])
        run_id: str = await client.start(parent, sha="abc", run_id="r-1")
        view: dp.RunView = await client.get(run_id)
        assert_type(await client.list(status="completed", limit=10), list[dp.RunView])
        await client.send_input(view.run_id, "approve", True)
        assert_type(await client.stop(run_id, now=True), str)
        await client.resume(run_id)
        assert_type(await client.cancel(run_id), str)
        await client.result(run_id, timeout=1.0)
    store: dp.Store = await dp.open_store(url)
    await dp.Client(store).close()


def script(url: str) -> None:
    with dp.SyncClient(url) as client:
        run_id = client.start(parent, sha="abc")
        assert_type(client.get(run_id), dp.RunView)
        assert_type(client.events(run_id), list[dict[str, Any]])
        client.send_input(run_id, "approve", True)
        client.result(run_id, timeout=10)
    try:
        dp.SyncClient.connect(url, migrate=False).close()
    except (dp.ConfigError, dp.DatabaseUnavailable, dp.InvalidRunState) as exc:
        print(exc)
"""

# Mistakes the types must catch: each marked line must be reported with that error code.
BAD = """
from sqlalchemy.engine import Connection

import durapipe as dp


@dp.step
def double(n: int) -> int:
    return 2 * n


@dp.pipeline(version="1")
async def child(sha: str, n: int = 1) -> list[str]:
    return [sha] * n


@dp.pipeline(version="1")
async def parent() -> None:
    await dp.run_subpipeline(child, sha="x", nope=1)  # E: call-overload
    await dp.run_subpipeline(child, sha=3)  # E: call-overload
    await dp.run_subpipeline(child)  # E: call-overload
    n: str = await dp.run_subpipeline(child, sha="x")  # E: call-overload
    m: str = await double(2)  # E: assignment
    await double("2")  # E: arg-type
    await dp.sleep("5")  # E: arg-type
    await dp.start_subpipeline(child, sha=3)  # E: call-overload
    await dp.start_subpipeline(child, nope=1)  # E: call-overload
    k: str = await (await dp.start_subpipeline(child, sha="x")).result()  # E: assignment
    await dp.tag(env=["x"])  # E: arg-type


@dp.pipeline  # E: arg-type
def not_async(x: int) -> int:
    return x


def client(url: str) -> None:
    dp.SyncClient(url).start(child, sha="x", pin="yes")  # E: arg-type


@dp.transaction
def debit(conn: Connection, account: str, cents: int) -> int:
    return cents


@dp.pipeline(version="1")
async def pays() -> None:
    n: int = await debit("alice", 5)
    await debit("alice", "5")  # E: arg-type
    await debit("alice", 5, 6)  # E: call-arg
"""


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What a pipeline looks like", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python block under 'What a pipeline looks like'"
    code = match.group(1)
    assert "import durapipe as dp" in code
    # A body left to the reader ('...') is not a stub in a user's module: give it one.
    code = re.sub(r"^(\s+)\.\.\.$", r"\1raise NotImplementedError", code, flags=re.M)
    return code + README_PRELUDE


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    work = tmp_path_factory.mktemp("user_typing")
    files = {
        "readme_snippet.py": _readme_snippet(),
        "good_usage.py": textwrap.dedent(GOOD),
        "bad_usage.py": textwrap.dedent(BAD),
    }
    for example in sorted((ROOT / "examples").glob("*.py")):
        files[f"example_{example.name}"] = example.read_text(encoding="utf-8")
    for name, code in files.items():
        (work / name).write_text(code, encoding="utf-8")
    # As for an installed typed package: durapipe's own modules are followed, not reported on.
    (work / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n\n[mypy-durapipe.*]\nfollow_imports = silent\n"
    )
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(work / ".cache"),
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
            *sorted(files),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed
    by_file: dict[str, list[str]] = {name: [] for name in files}
    for line in proc.stdout.splitlines():
        name = line.split(":", 1)[0]
        if ": error:" in line or ": note:" in line:
            by_file.setdefault(name, []).append(line)
    return work, by_file


@pytest.mark.parametrize(
    "name",
    ["readme_snippet.py", "good_usage.py"]
    + [f"example_{p.name}" for p in sorted((ROOT / "examples").glob("*.py"))],
)
def test_user_code_passes_mypy_strict(
    mypy_run: tuple[Path, dict[str, list[str]]], name: str
) -> None:
    _, by_file = mypy_run
    assert by_file[name] == [], "\n".join(by_file[name])


def test_mypy_reports_the_mistakes_the_types_catch(
    mypy_run: tuple[Path, dict[str, list[str]]],
) -> None:
    _, by_file = mypy_run
    lines = textwrap.dedent(BAD).splitlines()
    expected = {
        (i, m.group(1))
        for i, line in enumerate(lines, 1)
        if (m := re.search(r"# E: ([\w-]+)$", line))
    }
    got = set()
    for line in by_file["bad_usage.py"]:
        m = re.match(r"bad_usage\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            got.add((int(m.group(1)), m.group(2)))
    assert got == expected, "\n".join(by_file["bad_usage.py"])


def test_the_package_is_marked_typed() -> None:
    assert (ROOT / "durapipe" / "py.typed").is_file()
