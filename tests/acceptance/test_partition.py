"""A worker cut off from PostgreSQL past its lease: another takes over, and fencing keeps the
cut-off worker's late writes out when the network comes back.

Worker A reaches the database through a TCP proxy on loopback (tests/tcpproxy.py) that stops
forwarding without closing anything, as a network partition does; worker B connects directly.
PostgreSQL only (SQLite has no network); under CI=true a missing server fails, as everywhere.

Two more cases: the partition catches the worker inside a transaction (its row locks must not
outlive DURAPIPE_DB_TIMEOUT, or nobody could take over), and its connections never come back (its
statements time out and it reconnects instead of hanging forever).
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import PIPELINES, cli_env, client_call, epoch, side_effects, wait_until
from tcpproxy import ProxyConn, TcpProxy

WORK = str(PIPELINES / "work.py")
TTL = 3.0
WORKER_ENV = {
    "DURAPIPE_LEASE_TTL": str(int(TTL)),
    "DURAPIPE_POLL_INTERVAL": "0.2",
    # Statements and idle transactions end after 2 s (default 30): see the last two tests.
    "DURAPIPE_DB_TIMEOUT": "2",
}
RUNS = 3

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


class Worker:
    """``durapipe worker`` in the background, its stderr collected line by line."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "durapipe", "worker", "-m", WORK],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=cli_env(url, SIDE_DIR=str(tmp_path), **WORKER_ENV),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, *needles: str) -> bool:
        return any(all(n in line for n in needles) for line in list(self.lines))

    def stderr(self) -> str:
        return "\n".join(self.lines[-60:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; -> the exit code (fails the test if the worker does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit on SIGTERM:\n{self.stderr()}") from None
        self._done()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._done()

    def _done(self) -> None:
        self._reader.join(timeout=5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """Start workers on a URL; whatever is still running at teardown is killed."""
    workers: list[Worker] = []

    def start(url: str) -> Worker:
        w = Worker(url, tmp_path)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.kill()


@pytest.fixture
def proxy(db_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(db_url)
    assert parts.hostname and parts.port
    with TcpProxy(parts.hostname, parts.port) as p:
        yield p


def _start(db_url: str, pipeline: str, count: int, **inputs: Any) -> list[str]:
    from durapipe._definition import load_target

    pdef = load_target(f"{WORK}:{pipeline}")

    async def fn(c: Any) -> list[str]:
        return [await c.start(pdef, **inputs) for _ in range(count)]

    return list(client_call(db_url, fn))


def _rows(db_url: str, ids: list[str]) -> dict[str, Any]:
    """The runs' rows as stored (status, attempt, lease), read straight from the database."""

    async def fn(c: Any) -> dict[str, Any]:
        return {rid: await c.row(rid) for rid in ids}

    return dict(client_call(db_url, fn))


def _recorded(db_url: str, ids: list[str]) -> dict[str, Any]:
    """Everything stored about the runs: row, history, inputs and log lines."""

    async def fn(c: Any) -> dict[str, Any]:
        out = {}
        for rid in ids:
            row = await c.row(rid)
            out[rid] = (
                tuple(row),
                [tuple(e) for e in await c.store.events(rid)],
                [tuple(i) for i in await c.store.inputs_of(rid)],
                [tuple(x) for x in await c.store.read_logs(row.root_run_id)],
            )
        return out

    return dict(client_call(db_url, fn))


def _show(db_url: str, tmp_path: Path, rid: str) -> dict[str, Any]:
    """``durapipe show RUN --json``, as a user runs it, straight on the database."""
    p = subprocess.run(
        [sys.executable, "-m", "durapipe", "show", rid, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=cli_env(db_url),
    )
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


async def _pg(db_url: str, sql: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def test_worker_partitioned_past_its_lease_is_fenced_and_carries_on_after_heal(
    db_url: str, proxy: TcpProxy, spawn: Callable[[str], Worker], tmp_path: Path
) -> None:
    ids = _start(db_url, "held", RUNS)
    a = spawn(proxy.rewrite(db_url))
    wait_until(
        lambda: all(f"{rid} h-start" in side_effects(tmp_path, "effects") for rid in ids),
        what="A to hold every run inside its step",
    )
    first = {rid: row.attempt for rid, row in _rows(db_url, ids).items()}

    proxy.partition()
    cut_at = time.time()
    wait_until(  # nobody can extend A's leases now: they lapse within one TTL
        lambda: all((r.lease_expires_at or 0) < time.time() for r in _rows(db_url, ids).values()),
        timeout=TTL + 5,
        interval=0.1,
        what="A's leases to expire",
    )
    b = spawn(db_url)
    wait_until(
        lambda: all(
            row.attempt > first[rid]
            and side_effects(tmp_path, "effects").count(f"{rid} h-start") == 2
            for rid, row in _rows(db_url, ids).items()
        ),
        timeout=30,
        what="B to take every run over and reach the held step",
    )
    (tmp_path / "go").write_text("")  # B's steps finish, and so do A's, which cannot record it
    wait_until(
        lambda: all(r.status == "completed" for r in _rows(db_url, ids).values()),
        timeout=30,
        what="B to complete every run",
    )
    assert a.proc.poll() is None, f"A died while cut off:\n{a.stderr()}"
    assert not a.said("lease lost"), a.stderr()  # nothing can have told A yet
    before = _recorded(db_url, ids)

    # Everything A sent meanwhile (a heartbeat, a claim, its steps' completions) reaches the
    # server now, late and in order, as TCP delivers it when a partition heals in time.
    proxy.heal()
    wait_until(
        lambda: all(a.said(rid, "lease lost") for rid in ids),
        timeout=20,
        what=f"A to hear that it lost every run ({proxy.held_chunks} chunks were held)\n{a.stderr()}",
    )
    assert _recorded(db_url, ids) == before  # A recorded nothing more for the runs it lost

    effects = collections.Counter(side_effects(tmp_path, "effects"))
    with ThreadPoolExecutor(len(ids)) as pool:
        shown = dict(zip(ids, pool.map(lambda rid: _show(db_url, tmp_path, rid), ids), strict=True))
    for rid in ids:
        doc = shown[rid]
        evs = doc["events"]
        assert doc["status"] == "completed" and doc["output"] == "done"
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), evs  # contiguous, unique
        assert sum(e["kind"] == "run_completed" for e in evs) == 1
        completed = [e["name"] for e in evs if e["kind"] == "step_completed"]
        assert completed == ["effect", "effect", "hold", "effect", "effect"], evs  # each once
        # From B's first event on, every event is B's; A's all predate the partition.
        takeover = next(i for i, e in enumerate(evs) if e["attempt"] == doc["attempt"])
        assert all(e["attempt"] == doc["attempt"] for e in evs[takeover:]), evs
        assert all(epoch(e["at"]) <= cut_at for e in evs[:takeover]), evs
        # Side effects: at most once more than the one partition that hit the run mid-step.
        assert effects[f"{rid} a1"] == effects[f"{rid} a2"] == 1
        assert effects[f"{rid} h-start"] == 2
        assert effects[f"{rid} b1"] == effects[f"{rid} b2"] == 1

    # A is alive and well: with B gone, A alone completes a new run, then stops cleanly.
    assert a.proc.poll() is None, f"A died after the heal:\n{a.stderr()}"
    assert b.stop() == 0
    [fresh] = _start(db_url, "five", 1, n=2)
    wait_until(
        lambda: _rows(db_url, [fresh])[fresh].status == "completed",
        timeout=30,
        what=f"A to complete a new run after the heal\n{a.stderr()}",
    )
    assert a.stop() == 0, a.stderr()
    assert _recorded(db_url, ids) == before  # and nothing of A's turned up later either


def _commit_of_a_transaction_that_wrote(run_id: str) -> Callable[[ProxyConn, bytes], bool]:
    """A proxy trigger: the COMMIT of a transaction that sent ``run_id`` (A's heartbeat, which
    updates the run's lease). The server has run the UPDATE and holds the row lock."""
    rid = run_id.encode()

    def trigger(conn: ProxyConn, chunk: bytes) -> bool:
        n = conn.notes
        if b"BEGIN" in chunk:
            n["tx"], n["wrote"] = True, False
        if n.get("tx") and rid in chunk:
            n["wrote"] = True
        if b"COMMIT" in chunk or b"ROLLBACK" in chunk:
            fire = b"COMMIT" in chunk and bool(n.get("wrote"))
            n["tx"] = False
            return fire
        return False

    return trigger


def test_partition_inside_a_transaction_does_not_block_the_takeover(
    db_url: str, proxy: TcpProxy, spawn: Callable[[str], Worker], tmp_path: Path
) -> None:
    [rid] = _start(db_url, "held", 1)
    spawn(proxy.rewrite(db_url))
    wait_until(
        lambda: f"{rid} h-start" in side_effects(tmp_path, "effects"), what="A to hold the run"
    )
    first = _rows(db_url, [rid])[rid].attempt
    proxy.partition_when(_commit_of_a_transaction_that_wrote(rid))
    assert proxy.triggered.wait(TTL + 5), "A sent no heartbeat"
    stuck = asyncio.run(
        _pg(
            db_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'durapipe' "
            "AND state = 'idle in transaction'",
        )
    )
    assert stuck, "the partition did not catch A inside a transaction"
    spawn(db_url)
    wait_until(
        lambda: _rows(db_url, [rid])[rid].attempt > first,
        timeout=TTL + 4,  # ~3 s: the server ends the session after DURAPIPE_DB_TIMEOUT
        what="B to take the run over",
    )


def test_connections_dropped_for_good_do_not_hang_the_worker(
    db_url: str, proxy: TcpProxy, spawn: Callable[[str], Worker], tmp_path: Path
) -> None:
    [rid] = _start(db_url, "held", 1)
    a = spawn(proxy.rewrite(db_url))
    wait_until(
        lambda: f"{rid} h-start" in side_effects(tmp_path, "effects"), what="A to hold the run"
    )
    proxy.partition()
    proxy.heal("blackhole")  # the network is back, but the connections A had never carry a byte
    (tmp_path / "go").write_text("")
    wait_until(  # ~2 s: the statements time out and A reconnects
        lambda: _rows(db_url, [rid])[rid].status == "completed",
        timeout=8,
        what=f"A to finish the run on fresh connections\n{a.stderr()}",
    )
    assert a.stop() == 0
