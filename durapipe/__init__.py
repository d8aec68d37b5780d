"""durapipe: durable pipelines for Python.

Pipelines are plain ``async def`` functions. Their calls that touch the world are journaled to
a SQL history; a crash, a stop or a week-long wait is continued later by replay.
"""

from __future__ import annotations

from ._client import Client, RunView
from ._client_schedules import ScheduleView
from ._definition import PipelineDef, pipeline, step
from ._engine import (
    ChildHandle,
    FirstResult,
    RunInfo,
    await_input,
    context,
    continue_as_new,
    first,
    gather,
    logger,
    now,
    patched,
    random,
    recv,
    run_subpipeline,
    send,
    set_event,
    sleep,
    start_subpipeline,
    tag,
    uuid4,
)
from ._engine import exec_ as exec  # noqa: A001 - the public name is dp.exec
from ._engine.transaction import transaction
from ._exec import ExecResult
from ._local import cancel_here as _cancel_here  # noqa: F401 - installs Client.cancel's run-here part
from ._queues import Queue, QueueView
from ._schedules import Cron, Every
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
