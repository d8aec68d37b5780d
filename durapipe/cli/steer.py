"""Steering runs from outside: input, stop (a run, or a hold on a pipeline), cancel."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import _serde
from ..errors import InvalidInput
from ._app import DbOpt, NoTsOpt, _connect_for_run, _out, _run, _run_or_pipeline

# The client and the runner are imported when a command runs (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._runner import Runner


def _stdin_text() -> str:
    """All of stdin as UTF-8 text (the database stores text), whatever the locale says."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the value on stdin is not valid UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        ) from None


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
        from .._client import AdminClient

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


def cancel(
    run_id: Annotated[str, typer.Argument()],
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Cancel a run: its `finally` blocks run, its children are cancelled, it ends `cancelled`."""

    async def go() -> int:
        from ._foreground import _Foreground

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
