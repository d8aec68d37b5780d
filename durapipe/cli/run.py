"""Starting and continuing runs: run and resume (here, in the foreground), start (queued)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import _serde
from .._ids import validate_run_id
from .._kinds import TERMINAL
from ..errors import InvalidInput, InvalidRunState
from ._app import DbOpt, NoTsOpt, _connect_for_run, _err, _out, _run, _run_or_pipeline
from .admin import _duration

# The client, the engine and the runner are imported when a command runs, not with the CLI
# (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._client import AdminClient
    from .._runner import Runner

TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        help="How long the run may take from its start, sleeps and restarts included, "
        "e.g. 90s, 30m, 2h, 1h30m (default: the pipeline's timeout). Past it the run is "
        "cancelled and ends timed_out.",
    ),
]


def _timeout(text: str | None) -> float | None:
    """``--timeout``: seconds (a duration with units, or a plain number of seconds)."""
    if text is None:
        return None
    seconds = _duration(text)
    if seconds is None:
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(
            f"--timeout {text!r}: give how long the run may take, above 0, with a unit "
            "(s, m, h, d, w), e.g. 90s, 30m, 2h, 1h30m"
        )
    return seconds


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
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="KEY=VALUE: a tag of the run (`list --tag` finds it). Repeatable."
        ),
    ] = None,
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
    timeout: TimeoutOpt = None,
) -> None:
    """Start a run and execute it here with live output; print its id first and its JSON output last."""
    seconds = _timeout(timeout)

    async def go() -> int:
        from .._client import AdminClient, parse_inputs
        from .._definition import load_target
        from .._tag_rules import parse_tags
        from ._foreground import _Foreground

        inputs = parse_inputs(input or [], input_json)
        tags = parse_tags(tag)
        pdef = load_target(target)
        pdef.bind_inputs(inputs)
        client = await AdminClient.open(database_url)
        try:
            if run_id is not None and (why := validate_run_id(run_id)):
                raise InvalidInput(f"run id {run_id!r} is not usable: {why}")
            _serde.dumps(inputs, what="the inputs")
            held = await client.is_held(pdef.name, pdef.version)
            fg = _Foreground(client, [pdef], not no_timestamps)
            await fg.start()
            try:
                row, created = await client.create_run(
                    pdef,
                    inputs,
                    run_id=run_id,
                    pin=pin or None,
                    owner=None if held else fg.runner.id,
                    ttl=fg.runner.lease_ttl,
                    tags=tags,
                    timeout=seconds,
                )
            except BaseException:
                await fg.runner.close()
                raise
            if not created:
                await fg.runner.close()
                _out(row.id)
                if row.status in TERMINAL:
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
    from .._local import take

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
    """Continue a stopped, crashed, failed, blocked or dead run from where it left off."""
    _run_or_pipeline(run_id, pipeline, version, "to release a held pipeline")

    async def go() -> int:
        from .._client import AdminClient
        from .._definition import load_target
        from ._foreground import _Foreground

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
            row = await client.live_row(run_id)  # a chain (continue-as-new): its live link
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
            await fg.start()
            try:
                taken = await _take(client, row, fg.runner)
            except BaseException:
                await fg.runner.close()
                raise
            _out(row.id)
            status = await fg.drive(taken, resumed=row.status)
            return await fg.report(client, run_id, status)
        finally:
            await client.close()

    _run(go())


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
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="KEY=VALUE: a tag of the run (`list --tag` finds it). Repeatable."
        ),
    ] = None,
    database_url: DbOpt = None,
    timeout: TimeoutOpt = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="Wait in this queue (dp.Queue or `durapipe queue set`)."),
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="With --queue: higher is taken first.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="With --queue: its per-key limit applies to this key."),
    ] = None,
) -> None:
    """Queue a run for the workers and print its id."""
    seconds = _timeout(timeout)

    async def go() -> int:
        from .._client import AdminClient, parse_inputs
        from .._definition import load_target
        from .._tag_rules import parse_tags

        inputs = parse_inputs(input or [], input_json)
        tags = parse_tags(tag)
        pdef = load_target(target)
        async with await AdminClient.open(database_url) as client:
            rid = await client.start(
                pdef,
                run_id=run_id,
                pin=pin or None,
                inputs=inputs,
                tags=tags,
                timeout=seconds,
                queue=queue,
                priority=priority,
                key=key,
            )
        _out(rid)
        return 0

    _run(go())
