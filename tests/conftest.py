"""Fixtures shared by every test: a database per test on SQLite and on PostgreSQL, CLI helpers.

PostgreSQL: DURAPIPE_TEST_PG_URL if set (a server URL whose user may create databases);
otherwise a throwaway cluster is started from the local PostgreSQL binaries (tests/pgcluster.py).
With no server to be had the PostgreSQL tests skip — except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))
from pgcluster import PgCluster, find_pg_bin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = Path(__file__).resolve().parent / "pipelines"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    url = os.environ.get("DURAPIPE_TEST_PG_URL")
    if url:
        yield url
        return
    if find_pg_bin() is None:
        if IN_CI:
            pytest.fail(
                "CI=true but no PostgreSQL server binaries were found: install the `postgresql` package"
            )
        yield None
        return
    cluster = PgCluster()
    try:
        cluster.start()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"CI=true but the throwaway PostgreSQL cluster did not start: {exc}")
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _with_db(server: str, name: str) -> str:
    base = server.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per test process; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "durapipe.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_server: str | None) -> Iterator[str | None]:
    """A migrated PostgreSQL database, made once per test process; each test gets a copy
    (``CREATE DATABASE … TEMPLATE``: a file copy, instead of running every migration again)."""
    if pg_server is None:
        yield None
        return
    from durapipe._store import create_database, drop_database

    name = "dp_template_" + uuid.uuid4().hex[:12]
    asyncio.run(create_database(pg_server, name))
    _migrate(_with_db(pg_server, name))
    try:
        yield name
    finally:
        asyncio.run(drop_database(pg_server, name))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "durapipe.db"
        src = sqlite3.connect(request.getfixturevalue("sqlite_template"))
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("pg_server")
    if server is None:
        pytest.skip(
            "no PostgreSQL server available (set DURAPIPE_TEST_PG_URL or install postgresql)"
        )
    from durapipe._store import create_database, drop_database

    name = "dp_" + uuid.uuid4().hex[:16]
    asyncio.run(create_database(server, name, template=request.getfixturevalue("pg_template")))
    url = _with_db(server, name)
    try:
        yield url
    finally:
        asyncio.run(drop_database(server, name))


def _migrate(url: str) -> None:
    from durapipe._store import open_store

    async def go() -> None:
        store = await open_store(url, migrate=True)
        await store.close()

    asyncio.run(go())


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Any]:
    from durapipe._store import open_store

    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DURAPIPE_DATABASE_URL": db_url,
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            "DURAPIPE_POLL_INTERVAL": "0.1",
        }
    )
    env.pop("FORCE_COLOR", None)
    # Every CLI call is a new interpreter: with PYTHONDONTWRITEBYTECODE set (some sandboxes
    # and CI images set it) each one compiled the checkout's modules again, ~0.3 s of CPU.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # The CLI under test is this checkout's, whatever else is installed.
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update(extra)
    return env


@pytest.fixture
def dp_cli(db_url: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``durapipe ARGS`` as a real subprocess against this test's database."""

    def run(
        *args: str,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        check: bool = False,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "durapipe", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(tmp_path),
            env=cli_env(db_url, SIDE_DIR=str(tmp_path), **(env or {})),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"durapipe {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture
def dp_spawn(db_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``durapipe ARGS`` in the background (for kills); all are killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-m", "durapipe", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
            env=cli_env(db_url, SIDE_DIR=str(tmp_path), **(env or {})),
        )
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def wait_until(
    cond: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _in_a_transaction(db_url: str) -> bool:
    """Whether another connection holds the write lock (SQLite) or is inside a transaction
    (PostgreSQL; the tests' databases are their own). Only client backends count: autovacuum
    works in the same database, and a stop held back by its long transaction starves the
    process of the time it needs to renew its own lease."""
    from durapipe._store.url import resolve_url

    url = resolve_url(db_url)
    if url.dialect == "sqlite":
        assert url.path is not None
        conn = sqlite3.connect(url.path, timeout=0.1, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()

    async def busy() -> bool:
        import asyncpg

        from durapipe._store import Store

        conn = await asyncpg.connect(Store(url).plain_pg_dsn())
        try:
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                "AND backend_type = 'client backend'"
            )
            return bool(n)
        finally:
            await conn.close()

    return asyncio.run(busy())


def stop_between_transactions(p: subprocess.Popen[str], db_url: str) -> None:
    """SIGSTOP ``p`` at a moment it is in no transaction. Stopped inside one it is a hung
    writer that no other process gets past (on SQLite the whole database stays locked), which
    is not what a test of a paused worker is about: it is let go and stopped again."""

    def stopped_outside() -> bool:
        p.send_signal(signal.SIGSTOP)
        settle = time.monotonic() + 0.5  # a statement in flight ends without the client
        while _in_a_transaction(db_url):
            if time.monotonic() > settle:
                p.send_signal(signal.SIGCONT)
                return False
            time.sleep(0.02)
        return True

    # Let go, the process gets a moment to finish its transaction (and renew its leases).
    wait_until(stopped_outside, timeout=30, interval=0.1, what="a stop between transactions")


def side_effects(tmp_path: Path, name: str) -> list[str]:
    """Lines appended by test pipelines to SIDE_DIR/NAME (one line per real execution)."""
    f = tmp_path / name
    return f.read_text().splitlines() if f.exists() else []


def epoch(value: str) -> float:
    """A time from `list --json` / `show --json` (ISO 8601 with offset) as epoch seconds."""
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()


def client_call(db_url: str, fn: Any) -> Any:
    """``await fn(client)`` with a Client of ``db_url``, from sync test code."""
    import durapipe as dp

    async def go() -> Any:
        async with await dp.Client.connect(db_url) as c:
            return await fn(c)

    return asyncio.run(go())


# The web UI's browser (tests/acceptance/test_ui.py, test_ui_actions.py): one per test process.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's) driven by Selenium: the web UI's browser tests."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        why = "the browser tests need Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    # The driver is given: Selenium Manager (which would download one) is never asked.
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
