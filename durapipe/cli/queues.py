"""Queues: declare one (``durapipe queue set``), and see where they stand (``durapipe queues``)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ._app import DbOpt, JsonOpt, _open, _out, _print_rich, _run

queue_app = typer.Typer(help="Declare queues (durapipe queues lists them).", no_args_is_help=True)


def set_(
    name: Annotated[str, typer.Argument(help="The queue's name.")],
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="At most N of its runs at once, on all workers."),
    ] = None,
    key_concurrency: Annotated[
        int,
        typer.Option("--key-concurrency", help="At most N at once per key (start --key)."),
    ] = 1,
    no_key_limit: Annotated[bool, typer.Option("--no-key-limit", help="No limit per key.")] = False,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="At most N starts per window: N/DURATION, e.g. 10/1m, 5/s."),
    ] = None,
    priority: Annotated[
        bool,
        typer.Option("--priority/--no-priority", help="Runs may carry a priority (higher first)."),
    ] = False,
    database_url: DbOpt = None,
) -> None:
    """Declare a queue or replace its settings (a limit left out is no limit)."""

    async def go() -> int:
        from .._console import render_queues
        from .._queues import parse_rate

        parsed = parse_rate(rate) if rate is not None else None
        async with await _open(database_url) as client:
            view = await client.set_queue(
                name,
                concurrency=concurrency,
                key_concurrency=None if no_key_limit else key_concurrency,
                rate=parsed,
                priority=priority,
            )
            _print_rich(render_queues([view], now=time.time()))
        return 0

    _run(go())


def queues(database_url: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List the queues: waiting runs, runs holding a slot, limits, the oldest waiting."""

    async def go() -> int:
        from .._console import render_queues

        async with await _open(database_url) as client:
            views = await client.queues()
            if json_out:
                _out(json.dumps([v.__dict__ for v in views], ensure_ascii=False))
                return 0
            _print_rich(render_queues(views, now=time.time()))
        return 0

    _run(go())
