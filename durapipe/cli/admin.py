"""Running workers and looking after the database: worker, upgrade check, db upgrade, gc."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from typing import TYPE_CHECKING, Annotated

import typer

from .. import _config
from ..errors import ConfigError, InvalidInput
from ._app import DbOpt, JsonOpt, NoTsOpt, _err, _out, _print_rich, _run, _settle_heap

# The engine, the runner and the store are imported when a command runs, not with the CLI
# (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._definition import PipelineDef


def _pipelines_of(modules: list[str]) -> list[PipelineDef]:
    """The pipelines of ``--module`` specs (worker, upgrade check); a module without any is an error."""
    from .._definition import load_module, pipelines_in

    by_name: dict[str, tuple[PipelineDef, str]] = {}
    for spec in modules:
        found = pipelines_in(load_module(spec))
        if not found:
            raise ConfigError(
                f"module {spec} has no pipelines (functions decorated with @dp.pipeline)"
            )
        for p in found:
            seen = by_name.get(p.name)
            if seen is not None and not _same_definition(seen[0], p):
                # A worker runs one definition per name: the other's runs would replay code
                # that is not theirs.
                raise ConfigError(
                    f"two pipelines are named {p.name!r} (in {seen[1]} and in {spec}); "
                    "a worker carries one pipeline per name: rename one with "
                    "@dp.pipeline(name=...)"
                )
            by_name.setdefault(p.name, (p, spec))
    return [p for p, _spec in by_name.values()]


def _same_definition(a: PipelineDef, b: PipelineDef) -> bool:
    """One pipeline reached twice: imported by two modules, or one file loaded both by its path
    and as a module (two module objects, the same function of the same file)."""
    if a is b:
        return True
    import inspect

    def where(p: PipelineDef) -> tuple[str | None, str, str]:
        try:
            source = inspect.getsourcefile(p.fn)
        except TypeError:
            source = None
        return source and os.path.realpath(source), p.fn.__qualname__, p.version

    return where(a) == where(b)


def worker(
    ctx: typer.Context,
    module: Annotated[
        list[str], typer.Option("--module", "-m", help="Module or file with pipelines. Repeatable.")
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Runs executed at once.")
    ] = 100,
    lease_ttl: Annotated[
        float | None,
        typer.Option(
            "--lease-ttl",
            envvar="DURAPIPE_LEASE_TTL",
            help="Seconds a claim lasts without a heartbeat (default 30).",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            envvar="DURAPIPE_POLL_INTERVAL",
            help="Seconds between looks for work.",
        ),
    ] = None,
    suspend_after: Annotated[
        float | None,
        typer.Option(
            "--suspend-after",
            envvar="DURAPIPE_SUSPEND_AFTER",
            help="Waits longer than this suspend the run (default 60s).",
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", help="On SIGTERM, seconds for in-flight steps to finish.")
    ] = 30.0,
    console: Annotated[
        bool, typer.Option("--console", help="Print the runs' log lines here.")
    ] = False,
    log_file: Annotated[
        str | None,
        typer.Option("--log-file", help="Also write every log record to this JSON-lines file."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="DURAPIPE_METRICS_PORT",
            help="Serve Prometheus metrics on this port (/metrics; needs durapipe[metrics]).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option("--metrics-host", help="Address the metrics are served on."),
    ] = "127.0.0.1",
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Run a worker: claim runs of these modules' pipelines and execute them until stopped."""
    from . import _early

    _early.hold()  # until the loop's handlers below; see _early
    concurrency = int(_config.CONCURRENCY.check(concurrency))
    grace = _config.GRACE.check(grace)
    lease_ttl = _checked(ctx, "lease_ttl", lease_ttl, _config.LEASE_TTL)
    poll_interval = _checked(ctx, "poll_interval", poll_interval, _config.POLL_INTERVAL)
    suspend_after = _checked(ctx, "suspend_after", suspend_after, _config.SUSPEND_AFTER)

    metrics = None
    if metrics_port is not None:  # before anything is opened: a busy port changes nothing
        from .. import _metrics

        metrics = _metrics.listen(port=metrics_port, host=metrics_host)

    async def go() -> int:
        import asyncio

        from .._console import LiveConsole
        from .._engine import HOST
        from .._runner import Runner
        from .._store import open_store

        pipelines = _pipelines_of(module)
        store = await open_store(database_url)
        live = LiveConsole(timestamps=not no_timestamps) if console else None
        runner = Runner(
            store,
            kind="worker",
            pipelines=pipelines,
            concurrency=concurrency,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            suspend_after=suspend_after,
            on_record=live.record if live else None,
            on_tick=live.flush if live else None,
            log_file=log_file,
        )
        await runner.start()
        _settle_heap()
        carried = ", ".join(f"{p.name}@{p.version}" for p in pipelines)
        _err(f"worker {runner.id} on {HOST} (pid {os.getpid()}) carrying {carried}")
        if metrics is not None:
            _metrics.attach(metrics, runner)
            _err(f"worker {runner.id}: metrics on http://{metrics_host}:{metrics_port}/metrics")
        loop = asyncio.get_running_loop()
        signals = {"n": 0}
        done = loop.create_future()

        def on_signal() -> None:
            signals["n"] += 1
            if signals["n"] > 1:
                os._exit(1)
            _err(
                f"worker {runner.id}: shutting down (in-flight steps get {grace:g}s; signal again to exit at once)"
            )
            if not done.done():
                done.set_result(None)

        loop.add_signal_handler(signal.SIGTERM, on_signal)
        loop.add_signal_handler(signal.SIGINT, on_signal)
        if _early.requested:  # asked to stop while starting: stop now
            on_signal()
        try:
            await runner.serve(runner.claim_filter(), until=done)
            await runner.shutdown(grace=grace)
        finally:
            await runner.close()
            await store.close()
        if runner.failure is not None:  # a side task died: the worker stopped, loudly
            name, exc = runner.failure
            _err(f"worker {runner.id}: stopped because its {name} task died: {exc!r}")
            return 1
        _err(f"worker {runner.id}: stopped")
        return 0

    _run(go())


def _checked(
    ctx: typer.Context, param: str, value: float | None, setting: _config.Setting
) -> float | None:
    """An option that may come from its DURAPIPE_* variable, checked and named as it was given."""
    if value is None:
        return None
    source = ctx.get_parameter_source(param)
    from_env = source is not None and source.name == "ENVIRONMENT"
    return setting.check(value, source=setting.env if from_env else setting.option)


def upgrade_check(
    module: Annotated[
        list[str],
        typer.Option("--module", "-m", help="Module or file with the new code. Repeatable."),
    ],
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay every open run of these pipelines against the new code, with no side effects."""
    from .._upgrade import upgrade_check as check

    async def go() -> int:
        from .._store import open_store

        pipelines = _pipelines_of(module)
        store = await open_store(database_url)
        try:
            verdicts = await check(store, pipelines)
        finally:
            await store.close()
        bad = [v for v in verdicts if v.verdict != "compatible"]
        if json_out:
            _out(json.dumps([v.to_json() for v in verdicts]))
        else:
            from rich.table import Table
            from rich.text import Text

            t = Table(box=None, header_style="bold")
            for c in ("RUN", "PIPELINE", "RECORDED", "NOW", "STATUS", "VERDICT", "DETAIL"):
                t.add_column(c, no_wrap=c != "DETAIL")
            style = {"compatible": "green", "nondeterministic": "red", "would_abort": "yellow"}
            for v in verdicts:
                t.add_row(
                    v.run_id,
                    v.pipeline,
                    v.recorded_version,
                    v.current_version,
                    v.status,
                    Text(v.verdict, style=style[v.verdict]),
                    v.detail,
                )
            _print_rich(t if verdicts else "no open runs of these pipelines")
            _err(
                f"{len(verdicts)} open run(s): {len(verdicts) - len(bad)} compatible, {len(bad)} would break"
            )
        return 1 if bad else 0

    _run(go())


def db_upgrade(database_url: DbOpt = None) -> None:
    """Create or migrate durapipe's tables to this version's schema."""

    async def go() -> int:
        from .._store import open_store

        store = await open_store(database_url, migrate=True)
        rev = await store.schema_revision()
        await store.close()
        _out(f"database is at schema revision {rev}")
        return 0

    _run(go())


def gc(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Age of finished runs to delete, e.g. 2w, 30d, 12h, 1h30m."
        ),
    ],
    database_url: DbOpt = None,
) -> None:
    """Delete finished runs (and their history and logs) older than the given age.

    Runs are deleted oldest first, 1,000 at a time, each batch its own short transaction:
    running workers go on while it works. Stopped half-way, it can be run again. On
    PostgreSQL it VACUUMs the tables itself as it goes, gently, so autovacuum does not.
    """
    seconds = _duration(older_than)
    # NaN would compare as "older" than everything on PostgreSQL and delete every finished run.
    if seconds is None:
        raise InvalidInput(
            f"--older-than {older_than!r}: use numbers 0 or more, each with a unit "
            "(w, d, h, m, s), e.g. 2w, 30d, 12h, 1h30m"
        )

    async def go() -> int:
        from .._store import open_store

        store = await open_store(database_url)
        try:
            n = await store.gc(older_than=time.time() - seconds)
        finally:
            await store.close()
        _out(f"deleted {n} finished runs")
        return 0

    _run(go())


_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([wdhms])")


def _duration(text: str) -> float | None:
    """``1w``, ``30d``, ``1h30m``, ``1.5h``: seconds, or None when it is not such a duration."""
    body = text.strip()
    parts = _PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        return None
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    return seconds if math.isfinite(seconds) else None
