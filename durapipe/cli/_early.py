"""A stop asked for while a worker is still starting is kept, not fatal.

A worker spends its first second importing: the CLI, the user's modules, the database driver. A
SIGTERM or Ctrl-C in that window would kill it by the default action (exit -15, nothing said),
although nothing is claimed yet and a graceful stop costs nothing. So the worker command holds such
signals from the first line the process runs, and honours them as soon as it can serve: it stops at
once, says so and exits 0. A second signal still exits at once (1), as it does later.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence

requested: list[int] = []
_held = False


def _on_signal(signum: int, _frame: object) -> None:
    requested.append(signum)
    if len(requested) > 1:
        os._exit(1)


def hold() -> None:
    """Keep SIGTERM and SIGINT from now until the worker's loop installs its own handlers."""
    global _held
    if not _held and threading.current_thread() is threading.main_thread():  # (signals' rule)
        _held = True
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)


def hold_if_worker(argv: Sequence[str]) -> None:
    """Hold early if this process is ``durapipe worker …`` (the first word that is not an option)."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if words[:1] == ["worker"]:
        hold()
