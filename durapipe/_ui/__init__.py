"""``durapipe ui``: a web UI over the Client (install with ``pip install 'durapipe[ui]'``)."""

from __future__ import annotations

import asyncio
import ipaddress
import sys

from ..errors import ConfigError

EXTRA = "the web UI needs its packages: pip install 'durapipe[ui]'"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the UI on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token."""
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise ConfigError("--token: at least 8 printable characters without spaces")
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"--host {host} makes the UI reachable from other machines: give it a --token "
            "(or DURAPIPE_UI_TOKEN) that every request must carry, or bind 127.0.0.1"
        )


async def serve(url: str | None, *, host: str, port: int, token: str | None) -> None:
    """Serve the UI until interrupted; print its address once it listens."""
    check_bind(host, token)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ConfigError(f"{EXTRA} ({exc.name} is missing)") from None
    from .._client import AdminClient

    async with await AdminClient.open(url) as client:
        app = create_app(client, token=token)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task  # it failed to start (port taken): its error
                raise ConfigError(f"the UI could not listen on {host}:{port}")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        sys.stdout.write(f"durapipe ui: http://{shown}:{bound[1]}/ (Ctrl-C stops it)\n")
        sys.stdout.flush()
        await task
