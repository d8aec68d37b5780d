"""The ``durapipe`` command: thin commands that parse, call the client or a runner, and render."""

from ._app import app, main

__all__ = ["app", "main"]
