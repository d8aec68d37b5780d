"""Messages and published state: send (a message to a run), events (what a run published)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from .. import _serde
from ._app import DbOpt, JsonOpt, _connect_for_run, _err, _out, _print_rich, _run
from .steer import _stdin_text


def send(
    run_id: Annotated[str, typer.Argument()],
    topic: Annotated[str, typer.Argument(help="The topic, as in dp.recv(TOPIC).")],
    value: Annotated[
        str,
        typer.Argument(help="JSON when it parses, else taken as a string; - reads it from stdin."),
    ],
    database_url: DbOpt = None,
) -> None:
    """Send a message to a run; it takes it with dp.recv(TOPIC), now or later."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            text = _stdin_text() if value == "-" else value
            await client.send(run_id, topic, _serde.parse_cli_value(text))
        _out(f"sent {topic} to {run_id}")
        return 0

    _run(go())


def events(
    run_id: Annotated[str, typer.Argument()],
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="KEY",
            help="Wait until the run publishes KEY, then print its value.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --wait: give up after this many seconds (exit 1)."),
    ] = None,
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the state a run published with dp.set_event (latest value of each key)."""

    async def go() -> int:
        async with await _connect_for_run(database_url, run_id) as client:
            if wait is None:
                if timeout is not None:
                    _err("error: --timeout goes with --wait KEY")
                    return 2
                values = await client.published(run_id)
                if json_out:
                    _out(json.dumps(values, ensure_ascii=False))
                else:
                    from .._console import render_published

                    _print_rich(render_published(values))
                return 0
            if timeout is not None and (timeout != timeout or timeout < 0):
                _err(f"error: --timeout is 0 or more seconds, got {timeout:g}")
                return 2
            missing = object()
            got = await client.get_event(
                run_id, wait, wait=math.inf if timeout is None else timeout, default=missing
            )
            if got is missing:
                _err(
                    f"error: run {run_id} did not publish {wait!r}"
                    + (f" within {timeout:g}s" if timeout is not None else " (it has ended)")
                )
                return 1
            _out(json.dumps(got, ensure_ascii=False) if json_out else _plain(got))
        return 0

    _run(go())


def _plain(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
