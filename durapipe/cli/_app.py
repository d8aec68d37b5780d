"""The ``durapipe`` command: thin commands that parse, call the client or a runner, and render."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Annotated, Any

import typer

from .. import _config, _serde
from .._client import AdminClient, RunView, event_json, parse_inputs
from .._console import (
    LineFormatter,
    LiveConsole,
    record_json,
    render_list,
    render_show,
    running_status,
    use_color,
    visible,
)
from .._definition import load_module, load_target, pipelines_in
from .._engine import HOST, last_handled_failure
from .._ids import validate_run_id
from .._kinds import WAIT_ENDS, WAIT_STARTS
from .._local import drive_tree, local_runner, take
from .._runner import Runner
from .._store import open_store
from .._store import schema as S
from .._store.url import redact, resolve_url
from ..errors import ConfigError, DurapipeError, InvalidInput, InvalidRunState, RunNotFound

app = typer.Typer(
    name="durapipe",
    help="Durable pipelines: plain async functions journaled to SQL and continued by replay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        _out(f"durapipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_show_version,
            help="Print durapipe's version and exit.",
        ),
    ] = False,
) -> None:
    # Every DURAPIPE_* number is checked before a command opens (or creates) anything.
    _config.check_environment()


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
upgrade_app = typer.Typer(help="Safe upgrades of pipeline code.", no_args_is_help=True)
app.add_typer(upgrade_app, name="upgrade")

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DURAPIPE_DATABASE_URL",
        help="sqlite:///path.db or postgresql://user:pw@host:port/db (default: sqlite:///durapipe.db)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
NoTsOpt = Annotated[
    bool, typer.Option("--no-timestamps", help="Leave timestamps out of log lines.")
]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _run(coro: Awaitable[int]) -> None:
    code: int = asyncio.run(coro)  # type: ignore[arg-type]
    raise typer.Exit(code)


async def _connect_for_run(database_url: str | None, run_id: str) -> AdminClient:
    """Open the database a run id refers to; an embedded SQLite file that does not exist yet
    holds no runs, so say so without creating it."""
    url = resolve_url(database_url)
    if url.dialect == "sqlite" and url.path and not os.path.exists(url.path):  # noqa: ASYNC240 (one stat)
        raise RunNotFound(run_id)
    return await AdminClient.open(database_url)


def _print_rich(renderable: Any) -> None:
    from rich.console import Console

    tty = sys.stdout.isatty()
    Console(
        highlight=False, no_color=not use_color(sys.stdout) or None, width=None if tty else 200
    ).print(renderable)


# ---------------------------------------------------------------------- run / resume


class _Foreground:
    """A runner for one run tree in this process, with Ctrl-C turned into a clean stop."""

    def __init__(self, client: AdminClient, pipelines: list[Any], timestamps: bool) -> None:
        self.client = client
        self.console = LiveConsole(timestamps=timestamps)
        self.runner = local_runner(
            client.store,
            pipelines,
            on_record=self.console.record,
            on_input=self._on_input if sys.stdin.isatty() else None,
            on_tick=self.console.flush,
        )
        self.interrupted = False
        self.asking: list[tuple[str, str]] = []
        self.reading = False
        self._sending: set[asyncio.Future[Any]] = set()

    def _on_input(self, run_id: str, name: str, prompt: str | None, waiting: bool) -> None:
        """A person at the terminal can answer an input the run waits for."""
        key = (run_id, name)
        if waiting:
            self.asking.append(key)
            if len(self.asking) == 1:
                self._prompt()
        elif key in self.asking:  # answered some other way (`durapipe input`)
            shown = self.asking[0] == key
            self.asking.remove(key)
            if shown:
                self.console.answered(typed=False)
            if not self.asking:
                self._stop_reading()
            elif shown:
                self._prompt()

    def _prompt(self) -> None:
        _run_id, name = self.asking[0]
        # Through the console, which keeps it on screen while the status line and log lines change.
        self.console.prompt(f"answer for '{name}' (JSON or text) > ")
        if not self.reading:
            asyncio.get_running_loop().add_reader(sys.stdin.fileno(), self._on_stdin)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.reading = False

    def _on_stdin(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self._stop_reading()
            return
        if not self.asking:
            return
        self.console.answered(typed=True)
        run_id, name = self.asking[0]
        try:
            value = _serde.parse_cli_value(line.rstrip("\n"))
            _serde.dumps(value, what=f"input {name!r}")
        except DurapipeError as exc:
            _err(f"error: {exc}")
            self._prompt()
            return
        self.asking.pop(0)
        if self.asking:
            self._prompt()
        else:
            self._stop_reading()
        task = asyncio.ensure_future(self._deliver(run_id, name, value))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, run_id: str, name: str, value: Any) -> None:
        await self.client.send_input(run_id, name, value)
        self.runner.nudge(run_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1)
            procs = self.runner.running_commands()
            self.console.status(running_status(procs, now=time.monotonic()))

    def _on_sigint(self) -> None:
        if self.interrupted:
            os._exit(130)
        self.interrupted = True
        _err("Stopping (Ctrl-C again to exit at once; the run stays resumable)...")
        self.runner.interrupt_all("stop_now")

    async def drive(self, row: Any, *, resumed: str | None = None, cancel: bool = False) -> str:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGTERM, self._on_sigint)
        ticker = asyncio.ensure_future(self._tick()) if self.console.tty else None
        try:
            return await drive_tree(self.runner, row, resumed=resumed, cancel=cancel)
        finally:
            if ticker is not None:
                ticker.cancel()
            self.console.close()
            self._stop_reading()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            await self.runner.close()

    async def report(self, client: AdminClient, run_id: str, status: str) -> int:
        view = await client.get(run_id)
        if view.status == "completed":
            _out(json.dumps(view.output, ensure_ascii=False))
            return 0
        if view.status == "stopped":
            _err(f"run {run_id} stopped")  # the run's log printed how to continue it
            return 130 if self.interrupted else 1
        if view.status in ("sleeping", "waiting", "running", "pending"):
            _err(
                f"run {run_id} is {view.status} and was left to the workers (`durapipe show {run_id}`)"
            )
            return 1
        err = view.error or {}
        handled = (
            last_handled_failure(await client.history(run_id))
            if view.status == "failed" and err.get("step")
            else None
        )
        hint = {
            "failed": f"fix the cause, then `durapipe resume {run_id}` retries the failed step"
            if handled is None
            else f"the pipeline handled the failure of step {handled[0].label or handled[0].step}"
            " and went on, so `durapipe resume` would not retry it; start a new run",
            "blocked": f"restore code that makes the recorded calls, then `durapipe resume {run_id}`",
        }.get(view.status, f"`durapipe show {run_id}` has the details")
        _err(
            f"run {run_id} {view.status}: {err.get('type', 'Error')}: {visible(str(err.get('message', '')))} — {hint}"
        )
        return 1


@app.command()
def run(
    target: Annotated[
        str, typer.Argument(help="path/to/file.py:pipeline or package.module:pipeline")
    ],
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="NAME=VALUE; VALUE is JSON when it parses, else a string. Repeatable.",
        ),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input-json", help="All inputs as one JSON object.")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Your own id for the run (an idempotency key).")
    ] = None,
    pin: Annotated[
        bool,
        typer.Option(
            "--pin", help="Abort the run instead of continuing on another version of the pipeline."
        ),
    ] = False,
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Start a run and execute it here with live output; print its id first and its JSON output last."""

    async def go() -> int:
        inputs = parse_inputs(input or [], input_json)
        pdef = load_target(target)
        pdef.bind_inputs(inputs)
        client = await AdminClient.open(database_url)
        try:
            if run_id is not None and (why := validate_run_id(run_id)):
                raise InvalidInput(f"run id {run_id!r} is not usable: {why}")
            _serde.dumps(inputs, what="the inputs")
            held = await client.is_held(pdef.name, pdef.version)
            fg = _Foreground(client, [pdef], not no_timestamps)
            await fg.runner.start()
            try:
                row, created = await client.create_run(
                    pdef,
                    inputs,
                    run_id=run_id,
                    pin=pin or None,
                    owner=None if held else fg.runner.id,
                    ttl=fg.runner.lease_ttl,
                )
            except BaseException:
                await fg.runner.close()
                raise
            if not created:
                await fg.runner.close()
                _out(row.id)
                if row.status in S.TERMINAL:
                    _err(f"run {row.id} exists already and has ended; it is not run again")
                    return await fg.report(client, row.id, row.status)
                _err(
                    f"run {row.id} exists already ({row.status}); `durapipe show {row.id}`, or `durapipe resume {row.id}` to continue it here"
                )
                return 1
            _out(row.id)
            if held:  # queued as pending; no worker takes it until the hold is released
                await fg.runner.close()
                _err(
                    f"pipeline {pdef.name} is held (`durapipe stop --pipeline {pdef.name}`): run {row.id} is queued as pending; "
                    f"the workers take it once released with `durapipe resume --pipeline {pdef.name}`"
                )
                return 1
            status = await fg.drive(row)
            return await fg.report(client, row.id, status)
        finally:
            await client.close()

    _run(go())


async def _take(client: AdminClient, row: Any, runner: Runner) -> Any:
    """Take a run's lease for this process, or say who holds it."""
    now = time.time()
    taken = await take(runner, row)
    if taken is None:
        fresh = await client.row(row.id)
        if fresh.lease_owner:
            w = await client.worker(fresh.lease_owner)
            where = f"{w.kind} {w.id} on {w.host} (pid {w.pid})" if w else fresh.lease_owner
            left = max(0.0, (fresh.lease_expires_at or now) - now)
            raise InvalidRunState(
                f"run {row.id} is held by {where}; `durapipe stop {row.id}` first, or wait {left:.0f}s for its lease to expire"
            )
        raise InvalidRunState(f"run {row.id} is {fresh.status}; it cannot be taken now")
    return taken


@app.command()
def resume(
    run_id: Annotated[str | None, typer.Argument(help="The run to continue.")] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Hand the run to the workers instead of running it here."),
    ] = False,
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline", help="Release every run of this pipeline held by `stop --pipeline`."
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="With --pipeline: release only the hold of this version."),
    ] = None,
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Continue a stopped, crashed, failed or blocked run from where it left off."""
    _run_or_pipeline(run_id, pipeline, version, "to release a held pipeline")

    async def go() -> int:
        client = await (
            _connect_for_run(database_url, run_id) if run_id else AdminClient.open(database_url)
        )
        try:
            if pipeline is not None:
                which = f"{pipeline} version {version}" if version else pipeline
                if not await client.unhold(pipeline, version):
                    holds = [h for h in await client.holds() if h.pipeline == pipeline]
                    if holds:  # held, but not by a hold of this version
                        names = ", ".join(
                            f"--version {h.version}" if h.version else "all versions" for h in holds
                        )
                        raise InvalidRunState(
                            f"{which} is not held on its own; the holds of {pipeline} are: {names}"
                        )
                    raise InvalidRunState(
                        f"pipeline {which} is not held; `durapipe stop --pipeline {pipeline}` holds it"
                    )
                _out(f"pipeline {which} released: the workers take its runs again")
                return 0
            assert run_id is not None
            row = await client.row(run_id)
            await client.check_resumable(row)
            if await client.is_held(row.pipeline, row.version):
                raise InvalidRunState(
                    f"pipeline {row.pipeline} is held (`durapipe stop --pipeline {row.pipeline}`), so run {run_id} waits; "
                    f"release it with `durapipe resume --pipeline {row.pipeline}`"
                )
            if detach:
                await client.resume(run_id)
                _out(f"run {run_id} handed to the workers")
                return 0
            root = row
            pdef = load_target(root.entrypoint)
            fg = _Foreground(client, [pdef], not no_timestamps)
            await fg.runner.start()
            try:
                taken = await _take(client, row, fg.runner)
            except BaseException:
                await fg.runner.close()
                raise
            _out(run_id)
            status = await fg.drive(taken, resumed=row.status)
            return await fg.report(client, run_id, status)
        finally:
            await client.close()

    _run(go())


# ---------------------------------------------------------------------- queue and workers


@app.command()
def start(
    target: Annotated[
        str, typer.Argument(help="path/to/file.py:pipeline or package.module:pipeline")
    ],
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="NAME=VALUE (JSON when it parses). Repeatable."),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input-json", help="All inputs as one JSON object.")
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Your own id; starting again with it returns the same run."),
    ] = None,
    pin: Annotated[
        bool, typer.Option("--pin", help="Pin the run to this version of the pipeline.")
    ] = False,
    database_url: DbOpt = None,
) -> None:
    """Queue a run for the workers and print its id."""

    async def go() -> int:
        inputs = parse_inputs(input or [], input_json)
        pdef = load_target(target)
        async with await AdminClient.open(database_url) as client:
            rid = await client.start(pdef, run_id=run_id, pin=pin or None, inputs=inputs)
        _out(rid)
        return 0

    _run(go())


@app.command()
def result(
    run_id: Annotated[str, typer.Argument()],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ends.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --wait: give up after this many seconds."),
    ] = None,
    database_url: DbOpt = None,
) -> None:
    """Print a run's output as JSON (exit 1 if it did not complete)."""
    if timeout is not None:
        timeout = _config.TIMEOUT.check(timeout)

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            if wait:
                try:
                    out = await client.result(run_id, timeout=timeout)
                except TimeoutError as exc:
                    _err(str(exc))
                    return 3
                _out(json.dumps(out, ensure_ascii=False))
                return 0
            view = await client.get(run_id)
            if view.status == "completed":
                _out(json.dumps(view.output, ensure_ascii=False))
                return 0
            if view.status in S.TERMINAL or view.status == "blocked":
                err = view.error or {}
                _err(
                    f"run {run_id} {view.status}: {err.get('type', '')}: {visible(str(err.get('message', '')))}"
                )
                return 1
            _err(f"run {run_id} is {view.status}; use --wait to wait for it")
            return 3

    _run(go())


@app.command()
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
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Run a worker: claim runs of these modules' pipelines and execute them until stopped."""
    concurrency = int(_config.CONCURRENCY.check(concurrency))
    grace = _config.GRACE.check(grace)
    lease_ttl = _checked(ctx, "lease_ttl", lease_ttl, _config.LEASE_TTL)
    poll_interval = _checked(ctx, "poll_interval", poll_interval, _config.POLL_INTERVAL)
    suspend_after = _checked(ctx, "suspend_after", suspend_after, _config.SUSPEND_AFTER)

    async def go() -> int:
        pipelines = []
        for spec in module:
            found = pipelines_in(load_module(spec))
            if not found:
                raise ConfigError(
                    f"module {spec} has no pipelines (functions decorated with @dp.pipeline)"
                )
            pipelines.extend(found)
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
        carried = ", ".join(f"{p.name}@{p.version}" for p in pipelines)
        _err(f"worker {runner.id} on {HOST} (pid {os.getpid()}) carrying {carried}")
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


@app.command()
def workers(database_url: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List live workers: host, pid, heartbeat age, runs held, pipelines carried."""

    async def go() -> int:
        async with await AdminClient.open(database_url) as client:
            now = time.time()
            rows = await client.live_workers(now=now)
            held = await client.held_counts()
        items = [
            {
                "id": w.id,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "heartbeat_age": round(now - w.heartbeat_at, 1),
                "runs_held": held.get(w.id, 0),
                "pipelines": json.loads(w.pipelines),
                "concurrency": w.concurrency,
            }
            for w in rows
        ]
        if json_out:
            _out(json.dumps(items))
            return 0
        from rich.table import Table

        t = Table(box=None, header_style="bold")
        for c in ("WORKER", "KIND", "HOST", "PID", "HEARTBEAT", "RUNS", "PIPELINES"):
            t.add_column(c, no_wrap=True)
        for i in items:
            t.add_row(
                i["id"],
                i["kind"],
                i["host"],
                str(i["pid"]),
                f"{i['heartbeat_age']}s ago",
                str(i["runs_held"]),
                ", ".join(f"{n}@{v}" for n, v in i["pipelines"].items()),
            )
        _print_rich(t if items else "no live workers")
        return 0

    _run(go())


# ---------------------------------------------------------------------- looking


@app.command("list")
def list_(
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")
    ] = None,
    roots: Annotated[bool, typer.Option("--roots", help="Hide child runs.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.")] = 50,
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs, newest first, with counts by status."""

    async def go() -> int:
        async with await AdminClient.open(database_url) as client:
            views = await client.list(
                status=status, pipeline=pipeline, roots_only=roots, limit=limit
            )
            if json_out:
                _out(json.dumps([_run_json(v) for v in views], ensure_ascii=False))
                return 0
            rows, counts, timelines = await client.overview(
                status=status, pipeline=pipeline, roots_only=roots, limit=limit
            )
            _print_rich(render_list(rows, counts, now=time.time(), timelines=timelines))
        return 0

    _run(go())


def _iso(at: float | None) -> str | None:
    """A time for JSON: ISO 8601, local, with milliseconds and the offset from UTC."""
    if at is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def _run_json(v: RunView) -> dict[str, Any]:
    return {
        "run_id": v.run_id,
        "pipeline": v.pipeline,
        "version": v.version,
        "status": v.status,
        "inputs": v.inputs,
        "output": v.output,
        "error": v.error,
        "parent_run_id": v.parent_run_id,
        "root_run_id": v.root_run_id,
        "pinned": v.pinned,
        "attempt": v.attempt,
        "entrypoint": v.entrypoint,
        "created_at": _iso(v.created_at),
        "updated_at": _iso(v.updated_at),
        "finished_at": _iso(v.finished_at),
        "waiting_for": v.waiting_for,
    }


def _waits(v: RunView, events: list[Any]) -> list[str]:
    """Every wait the run is in (several under dp.gather), each with what ends it."""
    if v.status in S.TERMINAL:
        return []
    open_: dict[str, Any] = {}
    for e in events:
        if e.step is None:
            continue
        if e.kind in WAIT_STARTS:
            open_[e.step] = e
        elif e.kind in WAIT_ENDS:
            open_.pop(e.step, None)
    out = []
    for e in open_.values():
        data = json.loads(e.data) if e.data else {}
        if e.kind == "input_requested":
            prompt = f" ({data['prompt']})" if data.get("prompt") else ""
            out.append(
                f"Waiting for input '{e.name}'{prompt} — answer with: durapipe input {v.run_id} {e.name} VALUE"
            )
        elif e.kind == "child_started":
            out.append(f"Waiting for child run {data.get('child_run_id')}")
        elif data.get("wake_at"):
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["wake_at"]))
            out.append(f"Sleeping until {at}")
    return out


async def _who_can_take(client: AdminClient, row: Any) -> str | None:
    """Why nobody will pick this run up, when that is so (or why it was aborted)."""
    if row.status == "aborted" and row.error:
        return "aborted: " + str(json.loads(row.error).get("message", ""))
    if row.lease_owner is not None or row.status not in ("pending", "sleeping", "waiting"):
        return None
    for h in await client.holds():
        if h.pipeline == row.pipeline and h.version in ("", row.version):
            return (
                f"held by `durapipe stop --pipeline {row.pipeline}`; "
                f"release with: durapipe resume --pipeline {row.pipeline}"
            )
    for w in await client.live_workers(now=time.time()):
        carried = json.loads(w.pipelines)
        if row.pipeline in carried and (not row.pinned or carried[row.pipeline] == row.version):
            return None
    need = f"{row.pipeline} version {row.version} (pinned)" if row.pinned else row.pipeline
    return (
        f"no live worker can take this run: none carries {need}; "
        f"start one with `durapipe worker -m MODULE`, or `durapipe resume {row.id}`"
    )


@app.command()
def show(
    run_id: Annotated[str, typer.Argument()],
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a run: its steps, children, output or error, and what it waits for."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            view = await client.get(run_id)
            events = await client.history(run_id)
            kids = await client.children(run_id)
            row = await client.row(run_id)
            note = await _who_can_take(client, row)
            if json_out:
                doc = _run_json(view)
                doc["events"] = [{**event_json(e), "at": _iso(e.at)} for e in events]
                doc["children"] = [k.id for k in kids]
                doc["note"] = note
                _out(json.dumps(doc, ensure_ascii=False))
                return 0
            tree = kids
            if kids:  # the whole tree below this run: every run of its root, one query
                tree = await client.tree(row.root_run_id)
            _print_rich(
                render_show(
                    row,
                    events,
                    children=tree,
                    waits=_waits(view, events),
                    now=time.time(),
                    note=note,
                )
            )
        return 0

    _run(go())


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument()],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Print a run's log — the whole run tree as one ordered log."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            row = await client.row(run_id)
            fmt = LineFormatter(timestamps=not no_timestamps, color=use_color(sys.stdout))
            last = 0
            while True:
                batch = await client.read_logs(row.root_run_id, after_id=last)
                if row.parent_run_id is not None:
                    batch_view = [
                        r
                        for r in batch
                        if r.prefix == row.prefix or r.prefix.startswith(row.prefix + ".")
                    ]
                else:
                    batch_view = batch
                if batch and last == 0 and not json_out:
                    fmt.fit(r.prefix for r in batch_view)
                for r in batch_view:
                    if json_out:
                        _out(json.dumps(record_json(r), ensure_ascii=False))
                    else:
                        _out(fmt.format(prefix=r.prefix, line=r.line, stream=r.stream, at=r.at))
                if batch:
                    last = batch[-1].id
                    if len(batch) >= 5000:
                        continue
                if not follow:
                    return 0
                cur = await client.row(run_id)
                if cur.status in S.TERMINAL or cur.status in ("stopped", "blocked"):
                    final = await client.read_logs(row.root_run_id, after_id=last)
                    if not final:
                        return 0
                    continue
                await asyncio.sleep(0.3)

    _run(go())


# ---------------------------------------------------------------------- steering


def _stdin_text() -> str:
    """All of stdin as UTF-8 text (the database stores text), whatever the locale says."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the value on stdin is not valid UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        ) from None


@app.command("input")
def input_(
    run_id: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument(help="The input's name, as in dp.await_input(NAME).")],
    value: Annotated[
        str,
        typer.Argument(help="JSON when it parses, else taken as a string; - reads it from stdin."),
    ],
    database_url: DbOpt = None,
) -> None:
    """Send a value to a run that waits (or will wait) for input NAME."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            text = _stdin_text() if value == "-" else value
            await client.send_input(run_id, name, _serde.parse_cli_value(text))
        _out(f"sent {name} to {run_id}")
        return 0

    _run(go())


def _run_or_pipeline(
    run_id: str | None, pipeline: str | None, version: str | None, purpose: str
) -> None:
    """stop/resume take a RUN_ID, or --pipeline NAME [--version V] (a hold)."""
    if run_id is not None and pipeline is not None:
        raise InvalidInput("give a RUN_ID or --pipeline NAME, not both")
    if run_id is None and pipeline is None:
        raise InvalidInput(f"give a RUN_ID, or --pipeline NAME {purpose}")
    if version is not None and pipeline is None:
        raise InvalidInput("--version goes with --pipeline NAME")
    _check_pipeline_name(pipeline, version)


def _check_pipeline_name(pipeline: str | None, version: str | None) -> None:
    """A --pipeline/--version as the database can hold it (names up to 200, versions up to 100)."""
    for what, value, most in (("--pipeline", pipeline, 200), ("--version", version, 100)):
        if value is not None and (
            not value or len(value) > most or not _serde.storable_text(value)
        ):
            raise InvalidInput(
                f"{what} {value!r}: 1-{most} characters of valid Unicode without NUL bytes"
            )


@app.command()
def stop(
    run_id: Annotated[str | None, typer.Argument()] = None,
    now: Annotated[
        bool,
        typer.Option("--now", help="Also terminate a running command (it runs again on resume)."),
    ] = False,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", help="Hold every run of this pipeline (for an upgrade)."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="With --pipeline: hold only runs of this version."),
    ] = None,
    database_url: DbOpt = None,
) -> None:
    """Stop a run at its next journaled call; `durapipe resume` continues it."""
    _run_or_pipeline(run_id, pipeline, version, "to hold every run of a pipeline")

    async def go() -> int:
        async with await (
            _connect_for_run(database_url, run_id) if run_id else AdminClient.open(database_url)
        ) as client:
            if pipeline is not None:
                asked = await client.hold(pipeline, version)
                which = f"{pipeline} version {version}" if version else pipeline
                _out(
                    f"holding {which}: {asked} running run(s) pause at their next journaled call; "
                    f"new runs queue as pending. Release with: durapipe resume --pipeline {pipeline}"
                )
                return 0
            assert run_id is not None
            what = await client.stop(run_id, now=now)
        if what == "stopped":
            _out(f"run {run_id}: stopped")
        elif now:
            _out(
                f"run {run_id}: stop requested; a running command is terminated (SIGTERM, then "
                "SIGKILL after a grace period) and runs again on resume"
            )
        else:
            _out(f"run {run_id}: stop requested; it stops at its next journaled call")
        return 0

    _run(go())


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument()],
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Cancel a run: its `finally` blocks run, its children are cancelled, it ends `cancelled`."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            shown: list[_Foreground] = []

            def runner_for(pdef: Any) -> Runner:
                shown.append(_Foreground(client, [pdef], not no_timestamps))
                return shown[-1].runner

            try:
                # Nobody holds it: the cancellation runs here, so its cleanup code runs now.
                what = await client.cancel(run_id, _runner_for=runner_for)
            finally:
                for fg in shown:
                    fg.console.close()
            if what == "requested":
                _out(f"run {run_id}: cancel requested")
                return 0
            if what == "queued":
                row = await client.row(run_id)
                _out(f"run {run_id}: cancel queued for a worker that carries {row.pipeline}")
                return 0
            _out(f"run {run_id}: {what}")
            return 0 if what == "cancelled" else 1

    _run(go())


@upgrade_app.command("check")
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
        pipelines = []
        for spec in module:
            found = pipelines_in(load_module(spec))
            if not found:
                raise ConfigError(
                    f"module {spec} has no pipelines (functions decorated with @dp.pipeline)"
                )
            pipelines.extend(found)
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


# ---------------------------------------------------------------------- database


@db_app.command("upgrade")
def db_upgrade(database_url: DbOpt = None) -> None:
    """Create or migrate durapipe's tables to this version's schema."""

    async def go() -> int:
        store = await open_store(database_url, migrate=True)
        rev = await store.schema_revision()
        await store.close()
        _out(f"database is at schema revision {rev}")
        return 0

    _run(go())


@app.command()
def gc(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Age of finished runs to delete, e.g. 2w, 30d, 12h, 1h30m."
        ),
    ],
    database_url: DbOpt = None,
) -> None:
    """Delete finished runs (and their history and logs) older than the given age."""
    seconds = _duration(older_than)
    # NaN would compare as "older" than everything on PostgreSQL and delete every finished run.
    if seconds is None:
        raise InvalidInput(
            f"--older-than {older_than!r}: use numbers 0 or more, each with a unit "
            "(w, d, h, m, s), e.g. 2w, 30d, 12h, 1h30m"
        )

    async def go() -> int:
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


# ---------------------------------------------------------------------- entry point


def _setup_logging() -> None:
    """durapipe's own warnings (lost leases, database retries) go to stderr, one line each.

    Pipelines' own logging goes to the run's log instead (RunLogHandler), not here.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("durapipe: %(message)s"))
    handler.addFilter(lambda record: not record.name.startswith("durapipe.pipeline"))
    handler.addFilter(_redact_record)
    own = logging.getLogger("durapipe")
    own.addHandler(handler)
    own.setLevel(logging.WARNING)


def _redact_record(record: logging.LogRecord) -> bool:
    """No database password reaches the console through a log line (driver messages too)."""
    record.msg, record.args = redact(record.getMessage()), None
    return True


def _one_line(text: str) -> str:
    """``text`` on one line: line breaks, NUL and other unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, meaningful exit codes."""
    _setup_logging()
    try:
        rc = app(args=argv, standalone_mode=False)
    except DurapipeError as exc:
        _err(f"error: {_one_line(redact(str(exc)))}")
        rc = 1
    except KeyboardInterrupt:
        rc = 130
    except Exception as exc:
        # typer/click usage errors and exits (typer vendors click, so match by shape).
        name = type(exc).__name__
        if name == "Exit":
            rc = getattr(exc, "exit_code", 0)
        elif name == "Abort":
            rc = 130
        elif hasattr(exc, "show") and hasattr(exc, "exit_code"):
            text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            message = " ".join(part.strip() for part in str(text).splitlines())
            if message.strip():  # one line like every other error, not click's usage block
                ctx = getattr(exc, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                _err(f"error: {_one_line(redact(message))}{hint}")
            else:  # no arguments at all: the help was printed
                exc.show()
            rc = exc.exit_code
        else:
            raise
    sys.exit(rc if isinstance(rc, int) else 0)
