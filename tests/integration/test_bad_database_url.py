"""A database URL naming no database durapipe can use (a missing PostgreSQL database, an unknown
role, a file that is not SQLite) is one line on stderr saying what is wrong and what to do: no
traceback, a non-zero exit, nothing written. And it is not "the database is unreachable": no
worker or journal retries it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import PIPELINES, cli_env

from durapipe._store import open_store
from durapipe._store.errors import is_retryable as _is_retryable
from durapipe._store.errors import is_transient as _is_transient
from durapipe.errors import ConfigError, DatabaseUnavailable

COMMANDS = {
    "db upgrade": ["db", "upgrade"],
    "list": ["list"],
    "run": ["run", f"{PIPELINES / 'counting.py'}:counting", "--input", "n=1"],
}
NOT_SQLITE = b"hello\n"


def _server(pg_server: str | None) -> str:
    if pg_server is None:  # under CI=true the pg_server fixture has failed already
        pytest.skip(
            "no PostgreSQL server available (set DURAPIPE_TEST_PG_URL or install postgresql)"
        )
    return pg_server


def _missing_database(server: str) -> str:
    return server.rsplit("/", 1)[0] + "/dp_missing_" + uuid.uuid4().hex[:12]


def _unknown_role(server: str) -> str:
    # A password too: the message must mask it.
    scheme, rest = server.split("://", 1)
    hostpart = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}://dp_nobody_{uuid.uuid4().hex[:8]}:s3cret-pw@{hostpart}"


def _durapipe(url: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durapipe", *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
        env=cli_env(url),
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "has no durapipe tables" not in lines[0]  # the wrong diagnosis it used to give
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_postgres_database(command: str, pg_server: str | None, tmp_path: Path) -> None:
    url = _missing_database(_server(pg_server))
    name = url.rsplit("/", 1)[1]
    proc = _durapipe(url, COMMANDS[command], tmp_path)
    _assert_one_line_error(proc, "does not exist", name, "CREATE DATABASE")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unknown_postgres_role(command: str, pg_server: str | None, tmp_path: Path) -> None:
    url = _unknown_role(_server(pg_server))
    role = url.split("://", 1)[1].split(":", 1)[0]
    proc = _durapipe(url, COMMANDS[command], tmp_path)
    line = _assert_one_line_error(proc, role, "check the user and password", ":***@")
    assert "s3cret-pw" not in proc.stderr + proc.stdout, line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_file_that_is_not_sqlite(command: str, tmp_path: Path) -> None:
    (tmp_path / "notdb.db").write_bytes(NOT_SQLITE)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _durapipe("sqlite:///notdb.db", COMMANDS[command], tmp_path)
    _assert_one_line_error(proc, "notdb.db is not a SQLite database")
    assert (tmp_path / "notdb.db").read_bytes() == NOT_SQLITE
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, -shm, journal


def test_bad_databases_are_not_transient(pg_server: str | None, tmp_path: Path) -> None:
    """A worker or the journal must not retry these forever as if the server were down."""
    (tmp_path / "notdb.db").write_bytes(NOT_SQLITE)
    urls = [f"sqlite:///{tmp_path / 'notdb.db'}"]
    if pg_server is not None:
        urls += [_missing_database(pg_server), _unknown_role(pg_server)]
    for url in urls:
        for migrate in (None, True):
            with pytest.raises(ConfigError) as info:
                asyncio.run(open_store(url, migrate=migrate))
            exc = info.value
            assert not isinstance(exc, DatabaseUnavailable)
            assert not _is_retryable(exc) and not _is_transient(exc)
            assert exc.__cause__ is not None
            assert not _is_retryable(exc.__cause__) and not _is_transient(exc.__cause__)
    assert (tmp_path / "notdb.db").read_bytes() == NOT_SQLITE
