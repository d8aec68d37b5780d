"""durapipe: durable pipelines for Python.

Pipelines are plain ``async def`` functions. Their calls that touch the world are journaled to
a SQL history; a crash, a stop or a week-long wait is continued later by replay.
"""

from __future__ import annotations

from ._client import Client, RunView
from ._definition import PipelineDef, pipeline, step
from ._engine import (
    RunInfo,
    await_input,
    context,
    gather,
    logger,
    now,
    patched,
    random,
    run_subpipeline,
    sleep,
    uuid4,
)
from ._engine import exec_ as exec  # noqa: A001 - the public name is dp.exec
from ._exec import ExecResult
from ._local import cancel_here as _cancel_here  # noqa: F401 - installs Client.cancel's run-here part
from ._queues import Queue, QueueView
from ._secrets import Secret, secret
from ._store import Store, open_store
from ._sync_client import SyncClient
from .errors import (
    ConfigError,
    DatabaseUnavailable,
    DurapipeError,
    ExecFailed,
    InputTimeout,
    InvalidRunState,
    NonDeterminismError,
    NotInPipeline,
    RunFailed,
    RunNotFound,
    SerializationError,
    StepFailed,
    SubpipelineFailed,
    VersionMismatch,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigError",
    "DatabaseUnavailable",
    "DurapipeError",
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
    "Secret",
    "SerializationError",
    "StepFailed",
    "Store",
    "SubpipelineFailed",
    "SyncClient",
    "VersionMismatch",
    "await_input",
    "context",
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
    "step",
    "uuid4",
    # Queues (issue #18)
    "Queue",
    "QueueView",
]
