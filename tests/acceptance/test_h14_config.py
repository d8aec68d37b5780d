"""Hardening #14, configuration: database URLs, numeric settings, a locked or read-only SQLite
database, and the small CLI gaps (--version, completion, gc durations, ISO times in JSON).

Every case runs the real CLI as a subprocess. A refusal is exactly one ``error: ...`` line on
stderr, no traceback, a non-zero exit, and nothing created or changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import pytest
from conftest import PIPELINES, cli_env, wait_until

from durapipe._definition import load_target
from durapipe.testing import replay

COUNTING = str(PIPELINES / "counting.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _durapipe(
    args: list[str], cwd: Path, *, url: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    extra = dict(env)
    if url is not None:
        args = [*args, "--database-url", url]
    e = cli_env("sqlite:///durapipe.db", SIDE_DIR=str(cwd), **extra)
    if url is not None:
        e.pop("DURAPIPE_DATABASE_URL")
    return subprocess.run(
        [sys.executable, "-m", "durapipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd),
        env=e,
    )


def _one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------- item 2: passwords

PASSWORD = "Zq7vKw9Lm2Xr"  # no 4-character piece of it may be printed
PASSWORD_AT = "Zq7v@Kw9Lm2Xr"  # an unencoded @: the part after it used to be printed


def _pieces(password: str) -> set[str]:
    return {password[i : i + 4] for i in range(len(password) - 3)}


def _assert_no_password(proc: subprocess.CompletedProcess[str], password: str) -> None:
    shown = proc.stdout + proc.stderr
    leaked = sorted(p for p in _pieces(password) if p in shown)
    assert not leaked, (leaked, shown)


URL_FORMS = {
    "userinfo": f"postgresql://dp_user:{PASSWORD}@127.0.0.1:1/db",
    "userinfo with @": f"postgresql://dp_user:{PASSWORD_AT}@127.0.0.1:1/db",
    "query parameter": f"postgresql://dp_user@127.0.0.1:1/db?password={PASSWORD}",
    "query parameter with @": f"postgresql://dp_user@127.0.0.1:1/db?sslmode=disable&password={PASSWORD_AT}",
    "bad port and a password": f"postgresql://dp_user:{PASSWORD}@127.0.0.1:notaport/db",
    "DSN keywords": f"host=127.0.0.1 port=1 user=dp_user password={PASSWORD} dbname=db",
    "DSN keywords, quoted": f"host=127.0.0.1 port=1 password='{PASSWORD_AT} x' dbname=db",
}


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_no_piece_of_a_password_is_printed(form: str, tmp_path: Path) -> None:
    url = URL_FORMS[form]
    password = PASSWORD_AT if PASSWORD_AT in url else PASSWORD
    cases = [["list"], ["worker", "-m", COUNTING]]
    with ThreadPoolExecutor(len(cases)) as pool:
        procs = list(pool.map(lambda a: _durapipe(a, tmp_path, url=url), cases))
    for proc in procs:
        _assert_no_password(proc, password)
        _one_error(proc)


def test_no_password_from_the_server_or_its_driver(pg_server: str | None, tmp_path: Path) -> None:
    """A real server refusing an unknown role (the URL has a password in its query and in its
    userinfo), and a server reached with ?sslmode=require that it cannot satisfy."""
    if pg_server is None:
        pytest.skip("no PostgreSQL server available")
    hostpart = pg_server.split("://", 1)[1].rsplit("@", 1)[-1]
    urls = [
        f"postgresql://dp_nobody:{PASSWORD_AT.replace('@', '%40')}@{hostpart}",
        f"postgresql://dp_nobody@{hostpart}?password={PASSWORD}",
        f"postgresql://dp_nobody:{PASSWORD}@{hostpart}?sslmode=require",
    ]
    with ThreadPoolExecutor(len(urls)) as pool:
        procs = list(pool.map(lambda u: _durapipe(["list"], tmp_path, url=u), urls))
    for proc in procs:
        _assert_no_password(proc, PASSWORD_AT)
        _assert_no_password(proc, PASSWORD)
        _one_error(proc)


# ---------------------------------------------------------------------- item 9: numbers

BAD_SETTINGS: list[tuple[list[str], dict[str, str], str]] = [
    (["--lease-ttl", "0"], {}, "--lease-ttl 0"),
    (["--lease-ttl", "-1"], {}, "--lease-ttl -1"),
    (["--lease-ttl", "nan"], {}, "--lease-ttl nan"),
    (["--poll-interval", "0"], {}, "--poll-interval 0"),
    (["--suspend-after", "-1"], {}, "--suspend-after -1"),
    (["--grace", "nan"], {}, "--grace nan"),
    (["--concurrency", "0"], {}, "--concurrency 0"),
    ([], {"DURAPIPE_LEASE_TTL": "0"}, "DURAPIPE_LEASE_TTL='0'"),
    ([], {"DURAPIPE_LEASE_TTL": "nan"}, "DURAPIPE_LEASE_TTL='nan'"),
    ([], {"DURAPIPE_POLL_INTERVAL": "0"}, "DURAPIPE_POLL_INTERVAL='0'"),
    ([], {"DURAPIPE_SUSPEND_AFTER": "-inf"}, "DURAPIPE_SUSPEND_AFTER='-inf'"),
    ([], {"DURAPIPE_DB_TIMEOUT": "0"}, "DURAPIPE_DB_TIMEOUT='0'"),
    ([], {"DURAPIPE_DB_RETRY_SECONDS": "abc"}, "DURAPIPE_DB_RETRY_SECONDS='abc'"),
]


def test_numbers_out_of_range_are_refused_before_anything_runs(tmp_path: Path) -> None:
    """Options and their DURAPIPE_* variables share one validator: a lease of 0 or NaN, a poll
    interval of 0 and the like are refused at parse time, before the database is created."""
    cases = [(["worker", "-m", COUNTING, *args], env, want) for args, env, want in BAD_SETTINGS]
    cases += [  # the variables reach `run` and `list` too (the runner and the store read them)
        (["run", f"{COUNTING}:counting"], {"DURAPIPE_LEASE_TTL": "0.1"}, "DURAPIPE_LEASE_TTL"),
        (["list"], {"DURAPIPE_DB_RETRY_SECONDS": "abc"}, "DURAPIPE_DB_RETRY_SECONDS"),
        (["result", "run_x", "--wait", "--timeout", "nan"], {}, "--timeout nan"),
    ]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda c: _durapipe(c[0], tmp_path, timeout=30, **c[1]), cases))
    for (_args, _env, want), proc in zip(cases, procs, strict=True):
        _one_error(proc, want)
    assert not (tmp_path / "durapipe.db").exists()  # refused before the database was opened


# ---------------------------------------------------------------------- item 10: one line


def test_bad_urls_and_variables_are_one_line(pg_server: str | None, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    cases: list[tuple[str, dict[str, str], str]] = [
        ("sqlite:///docs", {}, "is a folder"),
        ("postgresql://u@127.0.0.1:notaport/db", {}, "port"),
        ("postgresql://u@127.0.0.1:99999/db", {}, "port"),
        ("postgresql://u@127.0.0.1:0/db", {}, "port"),
        ("postgresql://u@127.0.0.1:5432/db?sslmode=bogus", {}, "sslmode='bogus'"),
        ("sqlite:///x.db", {"DURAPIPE_DB_RETRY_SECONDS": "abc"}, "DURAPIPE_DB_RETRY_SECONDS"),
    ]
    if pg_server is not None:
        cases.append((pg_server + "?sslmode=bogus", {}, "sslmode='bogus'"))
    with ThreadPoolExecutor(4) as pool:
        procs = list(
            pool.map(lambda c: _durapipe(["list"], tmp_path, url=c[0], timeout=30, **c[1]), cases)
        )
    for (_url, _env, want), proc in zip(cases, procs, strict=True):
        _one_error(proc, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    assert not any((tmp_path / "docs").iterdir())


def _read_only_prefix() -> list[str]:
    """A command prefix that makes file permissions bind even for root (who ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only to us")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def test_read_only_sqlite_database_is_one_line_at_once(tmp_path: Path) -> None:
    """`run` and `start` on a file this user may not write: one line saying so, at once (not
    after DURAPIPE_DB_RETRY_SECONDS of retries, as if the database were down)."""
    db = tmp_path / "ro.db"
    _durapipe(["db", "upgrade"], tmp_path, url=f"sqlite:///{db}").check_returncode()
    db.chmod(0o444)
    before = db.read_bytes()
    env = cli_env(f"sqlite:///{db}", SIDE_DIR=str(tmp_path), DURAPIPE_DB_RETRY_SECONDS="600")
    for args in (["run", f"{COUNTING}:counting"], ["start", f"{COUNTING}:counting"]):
        proc = subprocess.run(
            [*_read_only_prefix(), sys.executable, "-m", "durapipe", *args],
            capture_output=True,
            text=True,
            timeout=30,  # far less than the 600 s of retries a "database is down" would get
            cwd=str(tmp_path),
            env=env,
        )
        _one_error(proc, "cannot write the SQLite database", str(db), "write access")
    assert db.read_bytes() == before


# ---------------------------------------------------------------------- item 4: SQLite lock

HOLDER = """
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
open(sys.argv[2] + ".held", "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.02)
conn.execute("COMMIT")
"""
LOCKED = "locked by another process; retrying"


def test_sqlite_write_lock_held_elsewhere_is_waited_out(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock (BEGIN IMMEDIATE) for longer than the busy
    timeout: an idle worker and a `durapipe run` wait, say so once each, and carry on."""
    db = tmp_path / "durapipe.db"
    url = f"sqlite:///{db}"
    env = cli_env(url, SIDE_DIR=str(tmp_path), DURAPIPE_DB_TIMEOUT="0.2")
    _durapipe(["db", "upgrade"], tmp_path, url=url).check_returncode()
    procs: list[subprocess.Popen[str]] = []
    files: list[IO[str]] = []

    def spawn(args: list[str], name: str) -> subprocess.Popen[str]:
        files.extend([(tmp_path / f"{name}.out").open("w"), (tmp_path / f"{name}.err").open("w")])
        p = subprocess.Popen(
            args, stdout=files[-2], stderr=files[-1], text=True, cwd=str(tmp_path), env=env
        )
        procs.append(p)
        return p

    def err(name: str) -> str:
        return (tmp_path / f"{name}.err").read_text()

    try:
        worker = spawn([sys.executable, "-m", "durapipe", "worker", "-m", COUNTING], "worker")
        wait_until(lambda: "carrying" in err("worker"), what="the worker to start")
        release = tmp_path / "lock"
        release.touch()
        spawn([sys.executable, "-c", HOLDER, str(db), str(release)], "holder")
        wait_until(lambda: Path(f"{release}.held").exists(), what="the lock to be taken")
        run = spawn(
            [sys.executable, "-m", "durapipe", "run", f"{COUNTING}:counting", "-i", "n=2"], "run"
        )
        # Both meet the lock (the worker when it looks for work, `run` when it creates its run)
        # and have waited out several busy timeouts by the time they say so.
        wait_until(lambda: LOCKED in err("worker") and LOCKED in err("run"), what="both to wait")
        assert worker.poll() is None and run.poll() is None, (err("worker"), err("run"))
        release.unlink()
        assert run.wait(timeout=60) == 0, err("run")
        out = (tmp_path / "run.out").read_text().splitlines()
        assert json.loads(out[-1]) == {"total": 30}, out
        for name in ("run", "worker"):
            text = err(name)
            assert "Traceback" not in text, text
            assert text.count(LOCKED) == 1, text  # once, not a line per retry
        # The idle worker is alive and still works: it takes a queued run after the lock.
        rid = _durapipe(["start", f"{COUNTING}:counting", "-i", "n=1"], tmp_path, url=url)
        rid.check_returncode()
        done = _durapipe(
            ["result", rid.stdout.strip(), "--wait", "--timeout", "30"], tmp_path, url=url
        )
        assert done.returncode == 0, done.stderr
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, err("worker")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for f in files:
            f.close()


# ---------------------------------------------------------------------- item 18: CLI gaps


def test_version_and_completion(tmp_path: Path) -> None:
    from durapipe import __version__

    proc = _durapipe(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"durapipe {__version__}", proc
    helped = _durapipe(["--help"], tmp_path)
    assert "--install-completion" in helped.stdout and "--version" in helped.stdout
    shown = _durapipe(["--show-completion", "bash"], tmp_path)
    assert shown.returncode == 0 and "complete" in shown.stdout, shown
    assert not (tmp_path / "durapipe.db").exists()


ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def _iso(value: str) -> float:
    assert isinstance(value, str) and ISO_MS.match(value), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None
    return parsed.timestamp()


def test_json_times_are_iso_and_show_export_replays(dp_cli: Cli, tmp_path: Path) -> None:
    cli = dp_cli
    before = time.time()
    r = cli("run", f"{COUNTING}:counting", "-i", "n=2", check=True)
    rid = r.stdout.splitlines()[0]
    listed = json.loads(cli("list", "--json", check=True).stdout)
    assert len(listed) == 1
    for key in ("created_at", "updated_at", "finished_at"):
        assert before - 1 <= _iso(listed[0][key]) <= time.time() + 1
    shown = cli("show", rid, "--json", check=True).stdout
    doc = json.loads(shown)
    assert _iso(doc["created_at"]) <= _iso(doc["finished_at"])
    ats = [_iso(e["at"]) for e in doc["events"]]
    assert ats == sorted(ats) and ats[0] >= before - 1
    # `durapipe.testing.replay` takes the export as it is, and as a file.
    pdef = load_target(f"{COUNTING}:counting")
    (tmp_path / "history.json").write_text(shown)
    for history in (doc, str(tmp_path / "history.json")):
        result = asyncio.run(replay(history, pdef))
        assert result.completed and result.output == {"total": 30}


def test_gc_takes_weeks_and_combined_durations(dp_cli: Cli) -> None:
    cli = dp_cli
    cli("run", f"{COUNTING}:counting", "-i", "n=1", check=True)
    good, bad = ["1w", "2w3d", "1h30m", "1d12h30m15s"], ["1h30", "1w-2d", "30d 1h", "1e3s"]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda age: cli("gc", "--older-than", age), good + bad))
    for age, r in zip(good + bad, procs, strict=True):
        if age in good:
            assert r.returncode == 0 and r.stdout.strip() == "deleted 0 finished runs", (age, r)
        else:
            _one_error(r, "--older-than")
    r = cli("gc", "--older-than", "0h0m")
    assert r.stdout.strip() == "deleted 1 finished runs", r
