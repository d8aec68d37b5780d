"""Schedules: add, list, pause, resume, delete, trigger (``durapipe schedule ...``)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from ..errors import InvalidInput
from ._app import DbOpt, JsonOpt, _open, _out, _print_rich, _run

schedule_app = typer.Typer(
    help="Start runs on a schedule: cron expressions or fixed intervals.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def add(
    name: NameArg,
    target: Annotated[
        str, typer.Argument(help="The pipeline: FILE.py:NAME or package.module:NAME.")
    ],
    cron: Annotated[
        str | None,
        typer.Option("--cron", help="A cron expression (5 fields), e.g. '0 3 * * *'."),
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="A fixed interval, e.g. 30s, 15m, 1h30m, 1d.")
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Time zone of --cron (IANA name, e.g. Europe/Berlin; UTC)."),
    ] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="An input of each run, NAME=VALUE. Repeatable."),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input-json", help="The inputs as a JSON object.")
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap", help="A tick while the last run still goes: skip, queue or allow."
        ),
    ] = "skip",
    catch_up: Annotated[
        str,
        typer.Option("--catch-up", help="Ticks missed while no worker ran: none, last or all."),
    ] = "last",
    database_url: DbOpt = None,
) -> None:
    """Add a schedule: workers carrying the pipeline start one run per tick."""
    from .. import _schedules as sch
    from .._client import parse_inputs

    sch.check_name(name)
    if (cron is None) == (every is None):
        raise InvalidInput("give one of --cron EXPR or --every DURATION")
    if every is not None and tz is not None:
        raise InvalidInput("--tz goes with --cron (an --every interval does not depend on it)")
    inputs = parse_inputs(input_ or [], input_json)
    sch.check_policy(overlap, catch_up)
    policy: dict[str, Any] = {"overlap": overlap, "catch_up": catch_up, "inputs": inputs}
    spec: sch.Cron | sch.Every
    if cron is not None:
        spec = sch.Cron(cron, tz=tz or "UTC", **policy)
    else:
        assert every is not None
        spec = sch.Every(every, **policy)

    async def go() -> int:
        async with await _open(database_url) as client:
            view = await client.add_schedule(name, target, spec)
        _out(
            f"added schedule {view.name}: {view.description} starts {view.pipeline}; "
            f"next at {_when(view.next_fire_at)}"
        )
        return 0

    _run(go())


def list_(database_url: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List schedules: when each fires next, its last run and that run's status."""

    async def go() -> int:
        async with await _open(database_url) as client:
            views = await client.list_schedules()
        if json_out:
            _out(json.dumps([v.to_json() for v in views], ensure_ascii=False))
        elif not views:
            _out("no schedules")
        else:
            from .._console import render_schedules

            _print_rich(render_schedules(views, now=time.time()))
        return 0

    _run(go())


def pause(name: NameArg, database_url: DbOpt = None) -> None:
    """Pause a schedule: it starts nothing until resumed (its runs go on)."""

    async def go() -> int:
        async with await _open(database_url) as client:
            await client.pause_schedule(name)
        _out(f"paused schedule {name}; resume with: durapipe schedule resume {name}")
        return 0

    _run(go())


def resume(name: NameArg, database_url: DbOpt = None) -> None:
    """Resume a paused schedule from its next tick (ticks it missed are not caught up)."""

    async def go() -> int:
        async with await _open(database_url) as client:
            await client.resume_schedule(name)
            view = await client.get_schedule(name)
        _out(f"resumed schedule {name}; next at {_when(view.next_fire_at)}")
        return 0

    _run(go())


def delete(name: NameArg, database_url: DbOpt = None) -> None:
    """Delete a schedule (the runs it started stay)."""

    async def go() -> int:
        async with await _open(database_url) as client:
            view = await client.get_schedule(name)
            await client.delete_schedule(name)
        note = (
            " (declared in code: a worker loading its module adds it again)"
            if view.source == "code"
            else ""
        )
        _out(f"deleted schedule {name}{note}")
        return 0

    _run(go())


def trigger(name: NameArg, database_url: DbOpt = None) -> None:
    """Start one run of a schedule now."""

    async def go() -> int:
        async with await _open(database_url) as client:
            run_id = await client.trigger_schedule(name)
        _out(run_id)
        return 0

    _run(go())
