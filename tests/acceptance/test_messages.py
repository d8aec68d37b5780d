"""Messages and published state as a user drives them: real workers, the CLI, real SIGKILL,
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PIPELINES, ROOT, wait_until

import durapipe as dp

MSGS = str(PIPELINES / "messages.py")
ORDER = str(ROOT / "examples" / "order.py")
# Short leases: a killed worker's runs are taken over in seconds. Runs stay in memory while they
# wait (ping-pong) unless a test asks them to park at once.
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1", "DURAPIPE_SUSPEND_AFTER": "60"}
PARK = {**FAST, "DURAPIPE_SUSPEND_AFTER": "0"}


@pytest.fixture
def sc(db_url: str) -> Iterator[dp.SyncClient]:
    """One client for the whole test (polling through it opens no connection per look)."""
    with dp.SyncClient(db_url) as client:
        yield client


def _start(sc: dp.SyncClient, target: str, **inputs: Any) -> str:
    from durapipe._definition import load_target

    return sc.start(load_target(target), **inputs)


def _kinds(sc: dp.SyncClient, run_id: str) -> list[str]:
    return [e["kind"] for e in sc.events(run_id)]


def _messages(sc: dp.SyncClient, run_id: str) -> list[Any]:
    return list(sc._call(sc._client.store.messages_of, run_id))


def _done(sc: dp.SyncClient, *run_ids: str) -> bool:
    return all(sc.get(r).status == "completed" for r in run_ids)


def _parked(sc: dp.SyncClient, run_id: str, kind: str, count: int = 1) -> bool:
    v = sc.get(run_id)
    return (
        v.status == "waiting" and v.lease_owner is None and _kinds(sc, run_id).count(kind) >= count
    )


def test_ping_pong_100_rounds_with_a_sigkill_loses_and_repeats_nothing(
    sc: dp.SyncClient, dp_spawn: Any
) -> None:
    pong = _start(sc, f"{MSGS}:ponger", rounds=100)
    ping = _start(sc, f"{MSGS}:pinger", peer=pong, rounds=100)
    first = dp_spawn("worker", "-m", MSGS, "--concurrency", "4", env=FAST)
    wait_until(
        lambda: _kinds(sc, ping).count("recv_received") >= 30,
        timeout=60,
        what="30 rounds before the kill",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = _kinds(sc, ping).count("recv_received")
    assert at_kill < 100  # killed in the middle
    dp_spawn("worker", "-m", MSGS, "--concurrency", "4", env=FAST)
    wait_until(lambda: _done(sc, ping, pong), timeout=90, what="both runs completed")
    assert sc.get(ping).output == list(range(100))
    assert sc.get(pong).output == list(range(100))
    for rid, topic in ((pong, "ping"), (ping, "pong")):
        rows = _messages(sc, rid)
        # Each sent exactly once across the crash, each taken exactly once, in order.
        assert [r.topic for r in rows] == [topic] * 100
        values = [json.loads(r.value) for r in rows]
        assert [v["i"] if isinstance(v, dict) else v for v in values] == list(range(100))
        taken = [r.consumed_seq for r in rows]
        assert None not in taken and len(set(taken)) == 100 and taken == sorted(taken)
        assert _kinds(sc, rid).count("message_sent") == 100


def test_messages_sent_before_during_and_after_recv_and_events_wait(
    sc: dp.SyncClient, dp_spawn: Any, dp_cli: Any
) -> None:
    rid = _start(sc, f"{MSGS}:inbox")
    dp_spawn("worker", "-m", MSGS, env=PARK)
    wait_until(lambda: _parked(sc, rid, "input_requested"), what="waiting for go")
    dp_cli("send", rid, "note", '"one"', check=True)  # before the recv asks
    # Another process waits for the run to publish 'stage'.
    waiter = dp_spawn("events", rid, "--wait", "stage", "--json")
    sc.send_input(rid, "go", True)
    wait_until(lambda: _parked(sc, rid, "recv_started", 1), what="the second recv parked")
    assert _kinds(sc, rid).count("recv_received") == 1
    assert waiter.poll() is None  # not published yet: still waiting
    dp_cli("send", rid, "note", '"two"', check=True)  # during: wakes the parked run
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert json.loads(out) == "took-two"
    wait_until(lambda: _parked(sc, rid, "input_requested", 2), what="waiting for go2")
    dp_cli("send", rid, "note", "-", stdin="three", check=True)  # after: queued for the next
    sc.send_input(rid, "go2", True)
    wait_until(lambda: _done(sc, rid), what="completed")
    assert sc.get(rid).output == ["one", "two", "three"]
    shown = dp_cli("show", rid, check=True).stdout
    assert "published:" in shown and "took-two" in shown
    assert sc.published(rid) == {"stage": "took-two"}


def test_order_example_paid_by_a_message_or_expired_by_its_timer(
    sc: dp.SyncClient, dp_spawn: Any, dp_cli: Any
) -> None:
    paid = _start(sc, f"{ORDER}:order", order_id="A-1", amount=10.0)
    expired = _start(sc, f"{ORDER}:order", order_id="A-2", amount=5.0, pay_within=1.0)
    dp_spawn("worker", "-m", ORDER, env=PARK)
    wait_until(lambda: _parked(sc, paid, "first_started"), what="order A-1 parked")
    status = dp_cli("events", paid, "--wait", "status", "--timeout", "10", check=True)
    assert status.stdout.strip() == "awaiting_payment"
    sc.send(paid, "cancel-not-this", 1)  # another topic: no effect
    dp_cli("send", paid, "paid", '{"receipt": "r-9"}', check=True)
    shipped = dp_cli("events", paid, "--wait", "shipped", "--timeout", "30", "--json", check=True)
    assert json.loads(shipped.stdout) == {"order": "A-1", "amount": 10.0}
    wait_until(lambda: _done(sc, paid, expired), what="both orders completed")
    assert sc.get(paid).output["status"] == "paid"
    assert sc.get(expired).output == {"order": "A-2", "status": "expired"}
    assert sc.published(expired) == {"status": "expired"}
    assert sc.get_event(expired, "status") == "expired" and sc.get_event(paid, "nope") is None
    # The message no wait took stays queued, untouched.
    rows = _messages(sc, paid)
    assert [(r.topic, r.consumed_seq is None) for r in rows] == [
        ("cancel-not-this", True),
        ("paid", False),
    ]


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line_and_changes_nothing(sc: dp.SyncClient, dp_cli: Any) -> None:
    rid = _start(sc, f"{ORDER}:order", order_id="B-1", amount=1.0)
    ended = _start(sc, f"{MSGS}:quick")
    sc.cancel(ended)  # nobody held it: executed here, now (it ends before it can be cancelled)
    status = sc.get(ended).status
    assert status in ("completed", "cancelled")
    # Through the CLI: one line, non-zero exit.
    _one_line_error(dp_cli("send", "run_nope", "paid", "1"), "run_nope")
    _one_line_error(dp_cli("send", ended, "paid", "1"), f"run {ended} has ended ({status})")
    big = json.dumps("x" * 1_100_000)
    _one_line_error(dp_cli("send", rid, "paid", "-", stdin=big), "limit is 1,000,000 bytes")
    _one_line_error(dp_cli("events", rid, "--wait", "no/such"), "not a short identifier")
    # Through the Client: the same refusals, as exceptions.
    with pytest.raises(dp.ConfigError, match="not a short identifier"):
        sc.send(rid, "bad topic!", 1)
    with pytest.raises(dp.ConfigError, match="not a short identifier"):
        sc.send(rid, "x" * 101, 1)
    with pytest.raises(dp.SerializationError, match="limit"):
        sc.send(rid, "paid", "x" * 1_100_000)
    with pytest.raises(dp.RunNotFound):
        sc.get_event("run_nope", "status")
    with pytest.raises(dp.ConfigError, match="not a short identifier"):
        sc.get_event(rid, "")
    assert _messages(sc, rid) == [] and _messages(sc, ended) == []
    assert _kinds(sc, rid) == ["run_started"]
