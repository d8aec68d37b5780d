"""Where engine code runs: the current run and branch, what the host provides, the run's log.

A run's code finds its :class:`~durapipe._engine.run.RunContext` and its :class:`Branch` (the
step-key namespace it takes keys from) in context variables; :func:`current` is how every
journaled call gets them, and refuses calls made where replay could not stay deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._clock import Clock
from .._secrets import scrub
from .._store.store import Journal
from ..errors import DurapipeError, NotInPipeline

if TYPE_CHECKING:
    from .run import RunContext

HOST = socket.gethostname()


@dataclass(frozen=True, kw_only=True)
class LogRecord:
    run_id: str
    root_run_id: str
    step: str | None
    prefix: str
    stream: str  # out | err | info | warn | error
    line: str
    at: float
    attempt: int


class RunHost(Protocol):
    """What the engine needs from whoever runs it (a worker or `durapipe run`)."""

    clock: Clock
    journal: Journal
    suspend_after: float
    poll_interval: float

    def emit(self, rec: LogRecord) -> None: ...
    def child_created(self, ctx: RunContext, child_id: str) -> None: ...
    def input_waiting(
        self, ctx: RunContext, name: str, prompt: str | None, waiting: bool
    ) -> None: ...
    async def fetch_input(self, run_id: str, name: str) -> tuple[int, Any] | None: ...
    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None: ...
    # messages (dp.send, dp.recv): the next message of a topic (id, value, sent at); a status
    async def fetch_message(
        self, run_id: str, topic: str, skip: set[int]
    ) -> tuple[int, Any, float] | None: ...
    async def run_status(self, run_id: str) -> str | None: ...
    # Child handles (dp.start_subpipeline):
    async def find_run(self, run_id: str) -> Any | None: ...
    async def cancel_child(self, child_id: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What ``dp.context()`` tells a pipeline or step about where it runs.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        version: the pipeline version the run started on.
        attempt: inside a step, which try of this call it is (1 on the first, 2 on the first
            retry...); elsewhere, how many times a process has taken the run.
        root_run_id: the id of the top run of its tree.
        parent_run_id: the parent's id in a child run.
        step_id: inside a step, an id that is the same on every try of this call: an
            idempotency key for its effects.
        is_replaying: the code is replaying recorded history.
        schedule: the name of the schedule whose tick started the run, or None.
        scheduled_at: the time of that tick (seconds since the epoch; the same on every
            replay), or None when no schedule started the run.
    """

    run_id: str
    pipeline: str
    version: str
    attempt: int
    root_run_id: str
    parent_run_id: str | None
    step_id: str | None = None
    is_replaying: bool = False
    schedule: str | None = None
    scheduled_at: float | None = None


class Branch:
    """A step-key namespace: the root of a run, or one branch of a dp.gather."""

    __slots__ = ("path", "counter", "task")

    def __init__(self, path: str, task: asyncio.Task[Any] | None) -> None:
        self.path = path
        self.counter = 0
        self.task = task

    def next_key(self) -> str:
        self.counter += 1
        return f"{self.path}/{self.counter}" if self.path else str(self.counter)


_CTX: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "durapipe_run", default=None
)
_BRANCH: contextvars.ContextVar[Branch | None] = contextvars.ContextVar(
    "durapipe_branch", default=None
)
_IN_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar("durapipe_step", default=None)
_STEP_LOG: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "durapipe_step_log", default=None
)
# Inside a step: which try of the call this is (1-based), for dp.context().attempt.
_STEP_TRY: contextvars.ContextVar[int] = contextvars.ContextVar("durapipe_step_try", default=0)

logger = logging.getLogger("durapipe.pipeline")
logger.setLevel(logging.INFO)


class RunLogHandler(logging.Handler):
    """Routes Python logging from inside pipelines and steps into the run's log, with its step."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("durapipe.") and record.name != "durapipe.pipeline":
            return
        ctx = _CTX.get()
        if ctx is None or not ctx._at_frontier():
            return  # not in a run, or replaying lines that were logged the first time
        key, label = _STEP_LOG.get() or (None, None)
        stream = (
            "info"
            if record.levelno < logging.WARNING
            else "warn"
            if record.levelno < logging.ERROR
            else "error"
        )
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        # Masked whole before it is split: a secret holding a newline spans lines.
        for line in scrub(text).splitlines() or [""]:
            if running is ctx.loop:
                ctx.emit(key, label, stream, line)
            else:  # a sync step in a worker thread
                ctx.loop.call_soon_threadsafe(ctx.emit, key, label, stream, line)


def install_log_handler() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, RunLogHandler) for h in root.handlers):
        root.addHandler(RunLogHandler())


def in_run_on_loop() -> bool:
    """Inside a run, on the event loop's thread (where a step call must be awaited)."""
    if _CTX.get() is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False  # in a sync step's thread: a nested step is a plain call
    return True


def current(what: str, *, step: bool = False) -> tuple[RunContext, Branch]:
    ctx = _CTX.get()
    branch = _BRANCH.get()
    if ctx is not None and branch is not None and _IN_STEP.get() is None:
        with contextlib.suppress(RuntimeError):  # no running loop: the messages below
            if branch.task is asyncio.current_task():
                return ctx, branch  # every journaled call: checked without building a message
    call = f"step {what}()" if step else f"dp.{what}()"
    if ctx is None:
        raise NotInPipeline(
            f"{call} works only inside a running pipeline; start one with `durapipe run FILE.py:NAME`"
        )
    if _IN_STEP.get() is not None:
        raise NotInPipeline(
            f"{call} cannot be called inside a @dp.step; call it from the pipeline itself"
        )
    branch = _BRANCH.get()
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if branch is None or task is not branch.task:
        raise DurapipeError(
            f"{call} was called from a task durapipe does not know (asyncio.create_task or "
            "asyncio.gather?). Run concurrent calls with `await dp.gather(...)` so replay stays deterministic"
        )
    return ctx, branch


def context() -> RunInfo:
    """Where the current code runs: run id, pipeline, version, attempt and (in a step) step id.

    Inside a step, ``attempt`` is the step's try (1-based): it counts the recorded retries of the
    call, so it carries on across crashes and resumes."""
    ctx = _CTX.get()
    if ctx is None:
        raise NotInPipeline("dp.context() works only inside a running pipeline or step")
    step = _IN_STEP.get()
    info = ctx.info()
    if step:
        tries = _STEP_TRY.get() or info.attempt
        return RunInfo(**{**info.__dict__, "step_id": step, "attempt": tries})
    return info
