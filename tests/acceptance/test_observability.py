"""Metrics and tracing as operators meet them: real worker processes, scraped over HTTP.

`durapipe worker --metrics-port` serves Prometheus metrics whose counters move as runs finish;
the standard OTEL_* environment turns tracing on for the CLI (console exporter here) and a
missing exporter or a busy port is a one-line error. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from typing import Any

import pytest
from conftest import PIPELINES, wait_until

TRACED = str(PIPELINES / "traced.py")
WORK = str(PIPELINES / "work.py")
FAST = {"DURAPIPE_POLL_INTERVAL": "0.05"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _value(text: str, name: str, **labels: str) -> float:
    """The value of a sample (0 when absent); labels must all match."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def test_worker_metrics_move_as_runs_finish(dp_cli: Any, dp_spawn: Any) -> None:
    pytest.importorskip("prometheus_client")
    port = _free_port()
    w = dp_spawn("worker", "-m", TRACED, "--metrics-port", str(port), env=FAST)
    text = wait_until(lambda: _try_scrape(port), what="the metrics endpoint", timeout=30)
    assert _value(text, "durapipe_runs_finished_total", pipeline="traced_quick") == 0
    ids = [
        dp_cli("start", f"{TRACED}:traced_quick", "--input", f"n={i}", check=True).stdout.strip()
        for i in range(3)
    ]
    for rid in ids:
        assert dp_cli("result", rid, "--wait", "--timeout", "60").returncode == 0
    text = wait_until(
        lambda: (
            t
            if _value(
                t := _scrape(port),
                "durapipe_runs_finished_total",
                pipeline="traced_quick",
                status="completed",
            )
            == 3
            else None
        ),
        what="three finished runs counted",
    )
    assert _value(text, "durapipe_runs_started_total", pipeline="traced_quick") == 3
    assert _value(text, "durapipe_runs_claimed_total") >= 3
    assert _value(text, "durapipe_step_duration_seconds_count", step="build") == 3
    assert _value(text, "durapipe_journal_commit_seconds_count") >= 3
    assert _value(text, "durapipe_journal_batch_size_sum") >= 3
    assert _value(text, "durapipe_leases_lost_total") == 0
    assert 'durapipe_runs{status="pending"}' in text
    # A queue's depth: a run of a pipeline no worker here carries waits in it.
    dp_cli("queue", "set", "metricsq", "--concurrency", "1", check=True)
    dp_cli("start", f"{WORK}:nap", "--input", "seconds=0", "--queue", "metricsq", check=True)
    wait_until(
        lambda: _value(_scrape(port), "durapipe_queue_depth", queue="metricsq") == 1,
        what="the queue's depth reported",
    )
    w.terminate()
    w.communicate(timeout=60)


def _try_scrape(port: int) -> str | None:
    try:
        return _scrape(port)
    except OSError:
        return None


def test_a_busy_metrics_port_is_one_line_and_no_worker_starts(dp_cli: Any) -> None:
    pytest.importorskip("prometheus_client")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = dp_cli("worker", "-m", TRACED, "--metrics-port", str(port))
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot serve metrics"), p.stderr
    assert "--metrics-port" in lines[0]
    workers = dp_cli("workers", "--json", check=True).stdout
    assert "wkr" not in workers  # nothing registered
    p = dp_cli("worker", "-m", TRACED, "--metrics-port", "70000")
    assert p.returncode != 0 and "is not a TCP port" in p.stderr


def test_tracing_from_the_standard_environment(dp_cli: Any) -> None:
    pytest.importorskip("opentelemetry.sdk")
    p = dp_cli(
        "run",
        f"{TRACED}:traced_quick",
        "--input",
        "n=2",
        env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "nightly"},
    )
    assert p.returncode == 0, p.stderr
    assert '"name": "run traced_quick"' in p.stdout
    assert '"name": "build"' in p.stdout
    assert '"service.name": "nightly"' in p.stdout
    # Not configured: nothing traced.
    p = dp_cli("run", f"{TRACED}:traced_quick", "--input", "n=3")
    assert p.returncode == 0 and '"name": "build"' not in p.stdout
    # An exporter that is not installed: one line saying what to install, nothing run.
    p = dp_cli(
        "run", f"{TRACED}:traced_quick", "--input", "n=4", env={"OTEL_TRACES_EXPORTER": "zipkin"}
    )
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such span exporter is installed" in lines[0], p.stderr
    assert len(json.loads(dp_cli("list", "--json", check=True).stdout)) == 2
