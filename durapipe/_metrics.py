"""Prometheus metrics of a worker: ``durapipe worker --metrics-port 9464``.

Counters and histograms come from the engine's hooks (``_engine/observe.py``: executions and
the calls that run for real — a replayed call counts nothing), the worker's claims and the
journal's commits; the gauges of runs by status are read from the database every few seconds
(a worker sees the whole database, so every worker reports the same figures: aggregate them with
``max``, not ``sum``). Exposed by ``prometheus-client`` on its own thread (``pip install
'durapipe[metrics]'``). The names are listed in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ._engine import observe
from ._kinds import ACTIVE, COMPLETIONS, EventKind, Family, RunStatus
from .errors import ConfigError

if TYPE_CHECKING:
    from ._engine.journaled import Call
    from ._engine.run import RunContext
    from ._runner import Runner

log = logging.getLogger("durapipe")

REFRESH_SECONDS = 5.0
_COUNTED = (
    *ACTIVE,
    RunStatus.QUEUED,
)  # the statuses durapipe_runs reports  # how often the gauges of runs by status are read from the database
_ENDED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.ABORTED,
        RunStatus.BLOCKED,
        RunStatus.STOPPED,
    }
)
_STEP_FAILURES = frozenset({EventKind.STEP_RETRY, EventKind.STEP_FAILED})
# Step durations from 1 ms to ~17 minutes.
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1000)


class Metrics(observe.Observer):
    """The worker's metrics, in a registry of their own."""

    def __init__(self) -> None:
        try:
            import prometheus_client as pc
        except ImportError:
            raise ConfigError(
                "--metrics-port needs prometheus-client: pip install 'durapipe[metrics]'"
            ) from None
        self.pc = pc
        self.registry = reg = pc.CollectorRegistry()
        self.started = pc.Counter(
            "durapipe_runs_started",
            "Runs whose first execution began in this worker.",
            ["pipeline"],
            registry=reg,
        )
        self.finished = pc.Counter(
            "durapipe_runs_finished",
            "Executions in this worker that ended a run (completed, failed, cancelled, "
            "aborted) or left it stopped or blocked, by the status they left.",
            ["pipeline", "status"],
            registry=reg,
        )
        self.executions = pc.Counter(
            "durapipe_executions",
            "Executions of runs in this worker, by how they ended (also suspended, "
            "released, lost).",
            ["pipeline", "outcome"],
            registry=reg,
        )
        self.step_seconds = pc.Histogram(
            "durapipe_step_duration_seconds",
            "Steps (@dp.step and dp.exec) run for real in this worker, from start to "
            "recorded completion, all attempts included.",
            ["pipeline", "step"],
            buckets=_BUCKETS,
            registry=reg,
        )
        self.step_failures = pc.Counter(
            "durapipe_step_failed_attempts",
            "Step attempts that failed (retried or final).",
            ["pipeline", "step"],
            registry=reg,
        )
        self.claimed = pc.Counter(
            "durapipe_runs_claimed", "Runs this worker claimed.", registry=reg
        )
        self.lost = pc.Counter(
            "durapipe_leases_lost",
            "Runs this worker stopped executing because it lost their lease.",
            registry=reg,
        )
        self.held = pc.Gauge(
            "durapipe_worker_runs_held", "Runs this worker executes now.", registry=reg
        )
        self.runs = pc.Gauge(
            "durapipe_runs",
            "Runs in the database that are not finished, by status (sleeping and waiting "
            "runs are suspended). Read every few seconds; the same in every worker.",
            ["status"],
            registry=reg,
        )
        self.queue_depth = pc.Gauge(
            "durapipe_queue_depth",
            "Runs waiting in each queue (dp.Queue), read every few seconds.",
            ["queue"],
            registry=reg,
        )
        self.queue_running = pc.Gauge(
            "durapipe_queue_running",
            "Runs of each queue holding one of its slots, read every few seconds.",
            ["queue"],
            registry=reg,
        )
        self.batch = pc.Histogram(
            "durapipe_journal_batch_size",
            "History writes (one per run) committed together by this worker's journal.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=reg,
        )
        self.commit_seconds = pc.Histogram(
            "durapipe_journal_commit_seconds",
            "Time of one journal commit (a batch of history writes), retries included.",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=reg,
        )
        for status in _COUNTED:
            self.runs.labels(status=status).set(0)

    # ---------------------------------------------------------------- engine hooks

    def run_begin(self, ctx: RunContext) -> None:
        if ctx.attempt == 1:
            self.started.labels(pipeline=ctx.pipeline).inc()

    def run_end(self, ctx: RunContext, outcome: str) -> None:
        self.executions.labels(pipeline=ctx.pipeline, outcome=str(outcome)).inc()
        if outcome in _ENDED:
            self.finished.labels(pipeline=ctx.pipeline, status=str(outcome)).inc()
        elif outcome == "lost":
            self.lost.inc()

    def call_begin(self, ctx: RunContext, call: Call) -> None:
        if call.family == Family.STEP:
            ctx.obs_data[("metrics", call.key)] = (call.name, time.monotonic())

    def call_event(self, ctx: RunContext, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind in _STEP_FAILURES:
            begun = ctx.obs_data.get(("metrics", event["step"]))
            if begun is not None:
                self.step_failures.labels(pipeline=ctx.pipeline, step=begun[0]).inc()
        if kind in COMPLETIONS:
            begun = ctx.obs_data.pop(("metrics", event["step"]), None)
            if begun is not None:
                name, t0 = begun
                self.step_seconds.labels(pipeline=ctx.pipeline, step=name).observe(
                    time.monotonic() - t0
                )

    # ---------------------------------------------------------------- worker hooks

    def on_claim(self, n: int) -> None:
        self.claimed.inc(n)

    def on_commit(self, ops: int, seconds: float) -> None:
        self.batch.observe(ops)
        self.commit_seconds.observe(seconds)

    async def refresh_loop(self, runner: Runner) -> None:
        """Read the gauges of runs by status from the database, every REFRESH_SECONDS."""
        while True:
            try:
                counts = await runner.store.count_by_status(statuses=_COUNTED)
            except Exception as exc:  # the database is away: keep the last figures
                log.debug("metrics: counting runs failed: %s", exc)
            else:
                for status in _COUNTED:
                    self.runs.labels(status=status).set(counts.get(status, 0))
            try:
                queues = await runner.store.queue_stats(now=time.time())
            except Exception as exc:
                log.debug("metrics: reading the queues failed: %s", exc)
            else:
                for lim, stats in queues:
                    self.queue_depth.labels(queue=lim.name).set(stats["depth"])
                    self.queue_running.labels(queue=lim.name).set(stats["running"])
            self.held.set(len(runner.held))
            await asyncio.sleep(REFRESH_SECONDS)


def listen(*, port: int, host: str) -> Metrics:
    """Serve a new set of metrics on ``host:port`` (``/metrics``), before the worker starts:
    a port in use or a missing prometheus-client is a one-line error with nothing changed."""
    if not 0 < port < 65536:
        raise ConfigError(f"--metrics-port {port} is not a TCP port: give one from 1 to 65535")
    metrics = Metrics()
    try:
        metrics.pc.start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): "
            "choose another --metrics-port or --metrics-host"
        ) from None
    return metrics


def attach(metrics: Metrics, runner: Runner) -> None:
    """Count ``runner``'s executions, claims and commits from now on."""
    observe.add(metrics)
    runner.on_claim = metrics.on_claim
    runner.journal.on_commit = metrics.on_commit
    runner.supervisor.start("durapipe-metrics", metrics.refresh_loop(runner))
