"""``durapipe ui``: serve the web UI."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import DbOpt, _run


def ui(
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on; beyond loopback a --token is required."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port).")
    ] = 8233,
    database_url: DbOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DURAPIPE_UI_TOKEN",
            help="A secret every request must carry (open the UI once as URL?token=TOKEN).",
        ),
    ] = None,
) -> None:
    """Serve the web UI: runs, histories, live logs; inputs, messages, stop/resume/cancel, fork, edit."""
    from .. import _ui
    from ..errors import InvalidInput

    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port {port}: give a port number from 0 to 65535")

    async def go() -> int:
        await _ui.serve(database_url, host=host, port=port, token=token)
        return 0

    _run(go())
