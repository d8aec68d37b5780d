"""Database faults: a PostgreSQL restart mid-run, a busy SQLite, an unreachable database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, PIPELINES, cli_env, side_effects, wait_until
from pgcluster import PgCluster, find_pg_bin

WORK = str(PIPELINES / "work.py")
COUNTING = str(PIPELINES / "counting.py")


def _cli(
    url: str, tmp_path: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durapipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=cli_env(url, SIDE_DIR=str(tmp_path), **env),
    )


def _spawn(url: str, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "durapipe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(url, SIDE_DIR=str(tmp_path), **env),
    )


def _statuses(url: str, tmp_path: Path) -> list[str]:
    return [
        r["status"]
        for r in json.loads(_cli(url, tmp_path, "list", "--json", "--limit", "1000").stdout or "[]")
    ]


@pytest.fixture
def own_pg() -> Any:
    """A PostgreSQL cluster of this test's own, because the test restarts it."""
    if find_pg_bin() is None:
        if IN_CI:
            pytest.fail("CI=true but no PostgreSQL binaries")
        pytest.skip("no PostgreSQL binaries")
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_postgres_restart_mid_run_workers_reconnect_and_nothing_is_lost(
    own_pg: Any, tmp_path: Path
) -> None:
    url = own_pg.url
    assert _cli(url, tmp_path, "db", "upgrade").returncode == 0
    ids = [
        _cli(url, tmp_path, "start", f"{WORK}:five", "--input", "n=40").stdout.strip()
        for _ in range(6)
    ]
    w = _spawn(
        url, tmp_path, "worker", "-m", WORK, DURAPIPE_LEASE_TTL="3", DURAPIPE_POLL_INTERVAL="0.2"
    )
    try:
        wait_until(
            lambda: len(side_effects(tmp_path, "effects")) >= 30, what="the runs to be under way"
        )
        own_pg.restart(mode="immediate")  # a crash of the server, then recovery
        try:
            wait_until(
                lambda: _statuses(url, tmp_path).count("completed") == 6,
                timeout=60,
                interval=0.5,
                what="all runs to complete after the restart",
            )
        except AssertionError:
            w.terminate()
            _, err = w.communicate(timeout=30)
            Path("/tmp/worker-restart.err").write_text(err)
            raise AssertionError(
                f"{_statuses(url, tmp_path)}\nworker stderr:\n{err[-4000:]}"
            ) from None
    finally:
        if w.poll() is None:
            w.terminate()
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    effects = side_effects(tmp_path, "effects")
    for rid in ids:
        mine = [e for e in effects if e.startswith(rid)]
        assert {e.split()[1] for e in mine} == {f"s{i}" for i in range(1, 41)}  # nothing lost
        assert len(mine) <= 41  # at most the one step in flight at the crash ran twice
        evs = json.loads(_cli(url, tmp_path, "show", rid, "--json").stdout)["events"]
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))


def test_sqlite_busy_with_another_writer_just_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durapipe.db'}"
    assert _cli(url, tmp_path, "db", "upgrade").returncode == 0
    holder = sqlite3.connect(
        tmp_path / "durapipe.db", isolation_level=None, check_same_thread=False
    )
    p = _spawn(url, tmp_path, "run", f"{COUNTING}:counting", "--input", "n=30")
    wait_until(lambda: len(side_effects(tmp_path, "steps")) >= 3, what="the run to be under way")
    holder.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock for a while
    holder.execute("INSERT INTO durapipe_holds (pipeline, version, created_at) VALUES ('x', '', 0)")
    release = threading.Timer(2.0, lambda: holder.execute("ROLLBACK"))
    release.start()
    out, err = p.communicate(timeout=120)
    release.join()
    holder.close()
    assert p.returncode == 0, err
    assert "locked" not in err and "locked" not in out
    assert json.loads(out.strip().splitlines()[-1]) == {"total": sum(i * 10 for i in range(1, 31))}
    assert side_effects(tmp_path, "steps") == [str(i) for i in range(1, 31)]


def test_unreachable_database_at_start_is_one_line(tmp_path: Path) -> None:
    p = _cli("postgresql://nobody@127.0.0.1:9/none", tmp_path, "worker", "-m", WORK)
    assert (
        p.returncode == 1
        and p.stderr.startswith("error: cannot reach the database")
        and len(p.stderr.strip().splitlines()) == 1
    )
