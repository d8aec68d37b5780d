"""Repairing runs: fork (a new run from part of a history) and edit (supersede a result)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from .. import _serde
from ..errors import InvalidInput
from ._app import DbOpt, NoTsOpt, _connect_for_run, _err, _out, _run

# The client, the engine and the runner are imported when a command runs, not with the CLI
# (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._client import AdminClient


def fork(
    run_id: Annotated[str, typer.Argument(help="The run to fork.")],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The first step to run again, as `show` prints it (3, 5/1/2, build_1); "
            "default: the failed or first interrupted step. --from 1 starts over.",
        ),
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="NAME=VALUE replacing one of the run's inputs. Repeatable."
        ),
    ] = None,
    new_run_id: Annotated[
        str | None, typer.Option("--run-id", help="The new run's id (default: a new one).")
    ] = None,
    start: Annotated[
        bool,
        typer.Option(
            "--start/--here",
            help="Queue the new run for the workers, or run it here (default) like `run`.",
        ),
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who forks it (default: the OS user).")
    ] = None,
    database_url: DbOpt = None,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Start a new run with a run's history up to a step, continuing from there with the current code."""

    async def go() -> int:
        from .._client import parse_inputs
        from .._definition import load_target
        from .._repair import fork_run
        from ._foreground import _Foreground

        inputs = parse_inputs(input or [], None)
        client = await _connect_for_run(database_url, run_id)
        try:
            source = await client.row(run_id)
            if start:
                row, point = await fork_run(
                    client, run_id, from_step=from_step, inputs=inputs, new_run_id=new_run_id, by=by
                )
                _out(row.id)
                _err(f"run {row.id} forked from {run_id} at step {point}; queued for the workers")
                return 0
            pdef = load_target(source.entrypoint)
            held = await client.is_held(pdef.name, pdef.version)
            fg = _Foreground(client, [pdef], not no_timestamps)
            await fg.start()
            try:
                row, point = await fork_run(
                    client,
                    run_id,
                    from_step=from_step,
                    inputs=inputs,
                    new_run_id=new_run_id,
                    by=by,
                    pdef=pdef,
                    owner=None if held else fg.runner.id,
                    ttl=fg.runner.lease_ttl,
                )
            except BaseException:
                await fg.runner.close()
                raise
            _out(row.id)
            _err(f"run {row.id} forked from {run_id} at step {point}")
            if held:
                await fg.runner.close()
                _err(
                    f"pipeline {pdef.name} is held: run {row.id} is queued as pending; the workers "
                    f"take it once released with `durapipe resume --pipeline {pdef.name}`"
                )
                return 1
            status = await fg.drive(row)
            return await fg.report(client, row.id, status)
        finally:
            await client.close()

    _run(go())


def edit(
    run_id: Annotated[str, typer.Argument(help="The run (stopped, failed or blocked).")],
    step: Annotated[
        str, typer.Argument(help="The step, as `show` prints it (3, 5/1/2, fetch_manifest_1).")
    ],
    result: Annotated[str | None, typer.Option("--result", help="The new result, as JSON.")] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required; kept with the edit).")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who edits it (default: the OS user).")
    ] = None,
    rerun_after: Annotated[
        bool,
        typer.Option(
            "--rerun-after/--keep-after",
            help="Run the later steps again on resume (default), or keep their recorded results.",
        ),
    ] = True,
    database_url: DbOpt = None,
) -> None:
    """Replace the recorded result of a step of a stopped, failed or blocked run (the old value is kept)."""

    async def go() -> int:
        if result is None:
            raise InvalidInput('give the new result as JSON: --result \'{"sha": "abc123"}\'')
        try:
            value = _serde.loads(result)
        except ValueError as exc:
            raise InvalidInput(
                f"--result is not valid JSON ({exc.args[0] if exc.args else exc}); a string is "
                "written in quotes: --result '\"text\"'"
            ) from None
        except RecursionError:
            raise InvalidInput("--result is nested too deeply to be read as JSON") from None
        if reason is None:
            raise InvalidInput(
                "give a --reason: why the result is edited (it is kept with the edit)"
            )
        from .._repair import edit_result

        client: AdminClient = await _connect_for_run(database_url, run_id)
        try:
            done = await edit_result(
                client, run_id, step, value, reason=reason, by=by, rerun_after=rerun_after
            )
        finally:
            await client.close()
        after = (
            f"the steps after {done['step']} run again"
            if rerun_after
            else "the later steps keep their results"
        )
        _out(
            f"step {done['step']} ({done['label']}) of run {run_id} now returns "
            f"{json.dumps(done['new'], ensure_ascii=False)[:200]}; "
            f"`durapipe resume {run_id}` continues it ({after})"
        )
        return 0

    _run(go())
