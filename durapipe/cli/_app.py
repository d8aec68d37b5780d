"""The typer app, the options every command shares, output, and the entry point: one-line
errors and meaningful exit codes."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import _config, _serde
from .._store.url import redact, resolve_url
from ..errors import DurapipeError, InvalidInput, RunNotFound

# The client, the console and asyncio are imported by the commands that use them, when they
# run: `durapipe --help` imports none of them (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._client import AdminClient

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
    if any(k.startswith("OTEL_") for k in os.environ):  # tracing is off unless configured
        from ..tracing import enable_from_env

        enable_from_env()


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
    import asyncio

    code: int = asyncio.run(coro)  # type: ignore[arg-type]
    raise typer.Exit(code)


async def _open(database_url: str | None) -> AdminClient:
    """Open the database as the CLI's client (imported here, when a command runs)."""
    from .._client import AdminClient

    return await AdminClient.open(database_url)


async def _connect_for_run(database_url: str | None, run_id: str) -> AdminClient:
    """Open the database a run id refers to; an embedded SQLite file that does not exist yet
    holds no runs, so say so without creating it."""
    from .._client import AdminClient

    url = resolve_url(database_url)
    if url.dialect == "sqlite" and url.path and not os.path.exists(url.path):  # noqa: ASYNC240 (one stat)
        raise RunNotFound(run_id)
    return await AdminClient.open(database_url)


def _settle_heap() -> None:
    """Once a process that runs pipelines has started: what it has built so far (modules,
    classes, compiled queries, the pipelines' code) is kept for good, so the cyclic garbage
    collector stops walking it. Its full collections, which pause the process while it holds
    a transaction as anywhere else, fall from ~80 ms to under 10 (bench/README.md, "The
    worker's own pauses"). Only the CLI's processes do this: an application embedding a
    Runner owns its own heap."""
    import gc

    gc.collect()
    gc.freeze()


def _print_rich(renderable: Any) -> None:
    from rich.console import Console

    from .._console import use_color

    tty = sys.stdout.isatty()
    Console(
        highlight=False, no_color=not use_color(sys.stdout) or None, width=None if tty else 200
    ).print(renderable)


# ---------------------------------------------------------------------- shared checks


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
    if "durapipe.tracing" in sys.modules:  # export the spans still buffered
        sys.modules["durapipe.tracing"].shutdown()
    sys.exit(rc if isinstance(rc, int) else 0)
