"""durapipe: durable pipelines for Python.

Pipelines are plain ``async def`` functions. Their calls that touch the world are journaled to
a SQL history; a crash, a stop or a week-long wait is continued later by replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    DatabaseUnavailable,
    DurapipeError,
    ExecFailed,
    InputTimeout,
    InvalidRunState,
    MessageTimeout,  # messages
    NonDeterminismError,
    NotInPipeline,
    RunFailed,
    RunNotFound,
    SerializationError,
    StepFailed,
    StepTimeout,
    SubpipelineFailed,
    VersionMismatch,
)

# The exceptions are a small module of their own: imported at once. Everything else is imported
# when it is first used (PEP 562), so `import durapipe` — and the `durapipe` command, which
# lives in this package — costs only what is used: `durapipe --help` or `durapipe show RUN`
# need neither the engine nor pydantic. Type checkers read the imports below as if they ran.
if TYPE_CHECKING:
    from ._client import Client, RunView
    from ._client_schedules import ScheduleView
    from ._definition import PipelineDef, pipeline, step
    from ._engine import (
        ChildHandle,
        FirstResult,
        RunInfo,
        await_input,
        logger,
        now,
        random,
        recv,
        run_subpipeline,
        send,
        set_event,
        start_subpipeline,
        tag,
        uuid4,
    )
    from ._engine import exec_ as exec  # noqa: A001 - the public name is dp.exec

    # Each named after its module in the engine: imported from it (mypy reads a name taken from
    # the package inside `if TYPE_CHECKING` as the module and the function at once).
    from ._engine.context import context
    from ._engine.continue_as_new import continue_as_new
    from ._engine.first import first
    from ._engine.gather import gather
    from ._engine.patched import patched
    from ._engine.sleep import sleep
    from ._engine.transaction import transaction
    from ._exec import ExecResult
    from ._queues import Queue, QueueView
    from ._schedules import Cron, Every
    from ._secrets import Secret, secret
    from ._store import Store, open_store
    from ._sync_client import SyncClient

# public name -> (module, its name there); kept in step with the imports above
# (tests/unit/test_public_api.py checks every name of __all__ resolves).
_LAZY: dict[str, tuple[str, str]] = {
    **{n: ("._client", n) for n in ("Client", "RunView")},
    "ScheduleView": ("._client_schedules", "ScheduleView"),
    **{n: ("._definition", n) for n in ("PipelineDef", "pipeline", "step")},
    **{
        n: ("._engine", n)
        for n in (
            "ChildHandle",
            "FirstResult",
            "RunInfo",
            "await_input",
            "context",
            "continue_as_new",
            "first",
            "gather",
            "logger",
            "now",
            "patched",
            "random",
            "recv",
            "run_subpipeline",
            "send",
            "set_event",
            "sleep",
            "start_subpipeline",
            "tag",
            "uuid4",
        )
    },
    "exec": ("._engine", "exec_"),
    "transaction": ("._engine.transaction", "transaction"),
    "ExecResult": ("._exec", "ExecResult"),
    **{n: ("._queues", n) for n in ("Queue", "QueueView")},
    **{n: ("._schedules", n) for n in ("Cron", "Every")},
    **{n: ("._secrets", n) for n in ("Secret", "secret")},
    **{n: ("._store", n) for n in ("Store", "open_store")},
    "SyncClient": ("._sync_client", "SyncClient"),
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it as an attribute of the package."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'durapipe' has no attribute {name!r}") from None
    from importlib import import_module

    value = getattr(import_module(module, __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "ChildHandle",
    "Client",
    "ConfigError",
    "Cron",
    "DatabaseUnavailable",
    "DurapipeError",
    "Every",
    "ExecFailed",
    "ExecResult",
    "InputTimeout",
    "InvalidRunState",
    "NonDeterminismError",
    "NotInPipeline",
    "PipelineDef",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunView",
    "ScheduleView",
    "Secret",
    "SerializationError",
    "StepFailed",
    "Store",
    "SubpipelineFailed",
    "SyncClient",
    "VersionMismatch",
    "await_input",
    "context",
    "continue_as_new",
    "exec",
    "gather",
    "logger",
    "now",
    "open_store",
    "patched",
    "pipeline",
    "random",
    "run_subpipeline",
    "secret",
    "sleep",
    "start_subpipeline",
    "step",
    "tag",
    "uuid4",
    # messages, published state, dp.first
    "FirstResult",
    "MessageTimeout",
    "first",
    "recv",
    "send",
    "set_event",
    "StepTimeout",
    "transaction",
    # Queues (issue #18)
    "Queue",
    "QueueView",
]
