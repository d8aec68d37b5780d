"""Replay and the journaled calls.

A :class:`RunContext` is one execution attempt of one run. It holds the run's history indexed
by step key. Each journaled call takes the next key of its branch synchronously, before any
await; if the history has a completion for that key, the recorded result is returned (after a
check that the code made the same kind of call with the same name); otherwise the call runs
for real and its completion is journaled before the result is handed back.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import random as _random
import signal
import socket
import time
import traceback
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from . import _exec, _serde
from ._clock import Clock
from ._secrets import Secret, reveal, scrub
from ._store.store import Journal, Op
from .errors import (
    DurapipeError,
    LeaseLost,
    NonDeterminismError,
    NotInPipeline,
    RunInterrupted,
    RunStopping,
    RunSuspending,
    SerializationError,
    StepFailed,
)

HOST = socket.gethostname()
INFINITY = math.inf
# A @dp.step's start is not waited for: it commits with the step's completion when the step ends
# within this many seconds (no commit of its own), else on its own after them.
STEP_START_GRACE = 0.01

COMPLETIONS = frozenset(
    {
        "step_completed",
        "step_failed",
        "timer_fired",
        "input_received",
        "input_timeout",
        "child_completed",
        "child_failed",
        "value_recorded",
    }
)


def family(kind: str) -> str:
    return kind.split("_", 1)[0]


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


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What ``dp.context()`` tells a pipeline or step about where it runs.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        version: the pipeline version the run started on.
        attempt: how many times a process has taken the run.
        root_run_id: the id of the top run of its tree.
        parent_run_id: the parent's id in a child run.
        step_id: inside a step, an id that is the same on every try of this call: an
            idempotency key for its effects.
        is_replaying: the code is replaying recorded history.
    """

    run_id: str
    pipeline: str
    version: str
    attempt: int
    root_run_id: str
    parent_run_id: str | None
    step_id: str | None = None
    is_replaying: bool = False


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

logger = logging.getLogger("durapipe.pipeline")
_log = logging.getLogger("durapipe.engine")
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
    call = f"step {what}()" if step else f"dp.{what}()"
    ctx = _CTX.get()
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


def error_message(exc: BaseException) -> str:
    """``str(exc)``, or what can be said when its ``__str__`` raises: the error is still stored
    and the run still ends (a broken message must not leave the run ``running``)."""
    try:
        return str(exc)
    except Exception as inner:
        try:
            why = f"{type(inner).__name__}: {inner}"
        except Exception:
            why = type(inner).__name__
        return f"its message could not be rendered ({why})"


def error_data(exc: BaseException, *, step: str | None = None) -> dict[str, Any]:
    """A stored error: type, message and traceback. Every failure recorded (a step's, a run's)
    is turned into data here."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # Trim to user code: drop frames from durapipe's own modules.
    noise = ("/durapipe/_", "asyncio/", "/concurrent/futures/", "/threading.py")
    kept = [line for line in tb if not any(n in line for n in noise)]
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": error_message(exc),
        # Masked before it is cut: a cut through a secret would leave a piece no mask matches.
        "traceback": scrub("".join(kept))[-8000:],
    }
    if step is not None:
        data["step"] = step
    return data


def _after_in_program(key: str, other: str) -> bool:
    """Whether call ``other`` comes after call ``key`` in code that saw ``key``'s outcome: later
    in the same branch (or nested under a later call of it), or in an enclosing branch after the
    dp.gather holding ``key``. A call in a sibling branch of a dp.gather ran concurrently."""
    a, b = key.split("/"), other.split("/")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            # Even positions count calls within a branch; odd ones number a gather's branches.
            return i % 2 == 0 and x.isdigit() and y.isdigit() and int(y) > int(x)
    return False


def handled_failure(history: list[Any], failed: Any, key: str) -> tuple[Any, Any] | None:
    """For a ``run_failed`` event whose error came from the call at ``key``: ``(the failure,
    the first call recorded after it by code that saw it)`` when the pipeline handled that
    failure and went on before it failed, else None.

    Resume may retry only a failure that was the last thing the pipeline did: once calls are
    recorded after it, running the call again (and taking another path) would contradict them.
    """
    failure = None
    for ev in history:
        if ev.seq >= failed.seq:
            break
        if ev.step == key and ev.kind in COMPLETIONS:
            failure = ev
    if failure is None:
        return None
    for ev in history:
        if ev.seq >= failed.seq:
            break
        if ev.seq > failure.seq and ev.step and _after_in_program(key, ev.step):
            return failure, ev
    return None


def last_handled_failure(history: list[Any]) -> tuple[Any, Any] | None:
    """:func:`handled_failure` for the run's last ``run_failed`` event (what resume would do)."""
    for ev in reversed(history):
        if ev.kind == "run_failed":
            origin = (_serde.loads(ev.data) or {}).get("step") if ev.data else None
            return handled_failure(history, ev, origin) if origin else None
    return None


class RunContext:
    """One attempt at running one run: its history, its lease, its position in the code."""

    def __init__(
        self,
        *,
        host: RunHost,
        row: Any,
        history: list[Any],
        owner: str,
        dry: bool = False,
    ) -> None:
        self.host = host
        self.clock = host.clock
        self.journal = host.journal
        self.run_id: str = row.id
        self.pipeline: str = row.pipeline
        self.version: str = row.version
        self.root_run_id: str = row.root_run_id
        self.parent_run_id: str | None = row.parent_run_id
        self.depth: int = row.depth
        self.prefix: str = row.prefix
        self.owner = owner
        self.attempt: int = row.attempt
        self.next_seq = history[-1].seq if history else 0
        self.records: dict[str, list[Any]] = {}
        for ev in history:
            if ev.step is not None:
                self.records.setdefault(ev.step, []).append(ev)
        # A resumed failed run retries the step whose failure failed it — unless the pipeline
        # handled that failure (made calls after it): then the failure replays as recorded.
        for ev in history:
            if ev.kind == "run_failed" and ev.data:
                origin = _serde.loads(ev.data).get("step")
                if (
                    origin
                    and origin in self.records
                    and handled_failure(history, ev, origin) is None
                ):
                    # Keep the earlier attempts' retry events (they count tries); drop the failure.
                    kept = [
                        e
                        for e in self.records[origin]
                        if e.seq > ev.seq or (e.seq < ev.seq and e.kind == "step_retry")
                    ]
                    if kept:
                        self.records[origin] = kept
                    else:
                        del self.records[origin]
        self.dry = dry  # upgrade check: replay only, stop at the first call with no recorded result
        self.patches: dict[str, bool] = {
            ev.name: True for ev in history if ev.kind == "patch_marker" and ev.name
        }
        self.visited: set[str] = set()
        self.labels: dict[str, int] = {}
        self.gathers = 0
        # What each wait in flight says about the run (status, waiting_for, wake_at), by step
        # key: when one of several dp.gather branches stops waiting, the run still waits.
        self.open_waits: dict[str, dict[str, Any]] = {}
        self.request: str | None = None  # stop | stop_now | cancel | shutdown | lost
        self.write_error: BaseException | None = None  # why a history write failed, if one did
        self.interrupted = asyncio.Event()
        self.nudge = asyncio.Event()
        self.procs: set[_exec.Process] = set()
        self.cancel_pending = False
        self.cancel_delivered = False
        self.fatal: NonDeterminismError | None = None
        self.task: asyncio.Task[Any] | None = None
        self.loop = asyncio.get_running_loop()
        self.status = "running"
        # Events recorded without waiting for them (a step's start): they go out with the run's
        # next history write, or on their own STEP_START_GRACE seconds later (see post()).
        self.unsent: list[dict[str, Any]] = []
        self._unsent_since = 0.0
        self._unsent_timer: asyncio.TimerHandle | None = None
        self._unsent_task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- helpers

    def info(self, step_key: str | None = None, replaying: bool = False) -> RunInfo:
        return RunInfo(
            run_id=self.run_id,
            pipeline=self.pipeline,
            version=self.version,
            attempt=self.attempt,
            root_run_id=self.root_run_id,
            parent_run_id=self.parent_run_id,
            step_id=f"{self.run_id}.{step_key}" if step_key else None,
            is_replaying=replaying,
        )

    def label(self, name: str) -> str:
        n = self.labels.get(name, 0) + 1
        self.labels[name] = n
        return f"{name}_{n}"

    def emit(self, step: str | None, label: str | None, stream: str, line: str) -> None:
        prefix = f"{self.prefix}.{label}" if label else self.prefix
        line = scrub(line)
        self.host.emit(
            LogRecord(
                run_id=self.run_id,
                root_run_id=self.root_run_id,
                step=step,
                prefix=prefix,
                stream=stream,
                line=line,
                at=self.clock.now(),
                attempt=self.attempt,
            )
        )

    def event(
        self,
        kind: str,
        *,
        step: str | None = None,
        name: str | None = None,
        label: str | None = None,
        data: str | None = None,
    ) -> dict[str, Any]:
        if data is not None:
            data = _serde.mask_json(data)
        self.next_seq += 1
        return {
            "run_id": self.run_id,
            "seq": self.next_seq,
            "kind": kind,
            "step": step,
            "name": name,
            "label": label,
            "at": self.clock.now(),
            "attempt": self.attempt,
            "data": data,
        }

    async def record(
        self,
        kind: str,
        *,
        step: str | None = None,
        name: str | None = None,
        label: str | None = None,
        data: Any = None,
        **kw: Any,
    ) -> None:
        """Append one event (``data`` as JSON) and apply ``kw`` (run_update...) in one write."""
        text = None if data is None else _serde.dumps(data)
        await self.write(self.event(kind, step=step, name=name, label=label, data=text), **kw)

    def post(self, event: dict[str, Any]) -> None:
        """Record ``event`` without waiting for it to be durable.

        It is committed with the run's next history write (a step's start rides with the step's
        completion: still one commit per step), or on its own once STEP_START_GRACE seconds have
        passed with nothing else written (a step that runs longer leaves a trace if killed).
        """
        if not self.unsent:
            self._unsent_since = self.loop.time()
        self.unsent.append(event)
        if self._unsent_timer is None:  # one timer at a time, not one per step
            self._unsent_timer = self.loop.call_at(
                self._unsent_since + STEP_START_GRACE, self._send_unsent
            )

    def _send_unsent(self) -> None:
        self._unsent_timer = None
        if not self.unsent:
            return
        due = self._unsent_since + STEP_START_GRACE
        if self.loop.time() < due:  # what was pending then went out; these are younger
            self._unsent_timer = self.loop.call_at(due, self._send_unsent)
        elif self._unsent_task is None:
            self._unsent_task = self.loop.create_task(self._write_unsent())

    async def _write_unsent(self) -> None:
        try:
            if self.unsent:  # not taken meanwhile by another write
                await self.write()
        except LeaseLost:
            pass  # write() marked the run lost: its next write raises instead
        finally:
            self._unsent_task = None
            if self.unsent and self._unsent_timer is None:  # posted while this one was out
                self._unsent_timer = self.loop.call_at(
                    self._unsent_since + STEP_START_GRACE, self._send_unsent
                )

    async def write(self, *events: dict[str, Any], **kw: Any) -> None:
        if self.unsent:
            # Events posted earlier come first: they hold the lower seqs.
            events = (*self.unsent, *events)
            self.unsent = []
        if self.request == "lost":
            # A write failed (or the lease went): writing more could leave a gap in the seqs.
            raise LeaseLost(self.run_id)
        op = Op(
            run_id=self.run_id, owner=self.owner, attempt=self.attempt, events=list(events), **kw
        )
        try:
            await self.journal.submit(op)
        except LeaseLost:
            self.request = "lost"
            raise
        except (DurapipeError, Exception) as exc:
            # The journal already retried; this run can no longer trust its seq counter.
            self.request = "lost"
            self.write_error = exc
            raise LeaseLost(f"run {self.run_id}: history write failed: {exc}") from exc

    def check(self, key: str) -> None:
        """At every journaled call: deliver stops and pending cancellation."""
        if self.fatal is not None:
            raise self.fatal
        if self.request in ("stop", "stop_now", "shutdown", "shutdown_now", "hold"):
            raise RunStopping(self.request)
        if self.request == "lost":
            raise LeaseLost(self.run_id)
        if self.request == "suspended":
            raise RunSuspending("suspended")

    def recorded(self, key: str, family_: str, name: str) -> tuple[Any | None, list[Any]]:
        """-> (completion event or None, all events at key). Raises on a mismatch."""
        evs = self.records.get(key)
        if not evs:
            if self.dry:
                raise ReplayFrontier(key)
            if self.cancel_pending and not self.cancel_delivered:
                self.cancel_delivered = True
                raise asyncio.CancelledError("durapipe: run cancelled")
            return None, []
        self.visited.add(key)
        first = evs[0]
        if family(first.kind) != family_ or (first.name or "") != name:
            err = NonDeterminismError(
                self.run_id, key, f"{family(first.kind)} {first.name!r}", f"{family_} {name!r}"
            )
            self.fatal = err
            raise err
        done = next((e for e in evs if e.kind in COMPLETIONS), None)
        if done is None and self.dry:
            raise ReplayFrontier(key)
        if done is None and self.cancel_pending and not self.cancel_delivered:
            self.cancel_delivered = True
            raise asyncio.CancelledError("durapipe: run cancelled")
        return done, evs

    def after_wait(self) -> dict[str, Any]:
        """The run update once a wait ended: running, or what another branch still waits for."""
        now = self.clock.now()
        if self.open_waits:
            latest = list(self.open_waits.values())[-1]
            return {"wake_at": None, **latest, "updated_at": now}
        return {"status": "running", "waiting_for": None, "wake_at": None, "updated_at": now}

    def unvisited(self) -> list[str]:
        return sorted((k for k in self.records if k not in self.visited), key=_key_order)

    def can_suspend(self) -> bool:
        return self.gathers == 0 and self.request is None

    async def wait(
        self,
        key: str,
        *,
        deadline: float | None,
        ready: Callable[[], Awaitable[bool]] | None,
        status: str,
        waiting_for: dict[str, Any],
        wake_if_input: str | None = None,
        wake_if_child: str | None = None,
    ) -> bool:
        """Wait until ``ready()`` or the deadline. -> True when ready, False at the deadline.

        Short waits stay in memory; a long one suspends the run (raises RunSuspending) when
        nothing else in the run is in flight. While it waits, step ``key`` is one of the run's
        open waits (see :meth:`after_wait`).
        """
        self.open_waits[key] = {
            "status": status,
            "waiting_for": _serde.dumps(waiting_for),
            "wake_at": deadline if status == "sleeping" else None,
        }
        try:
            return await self._wait(
                deadline, ready, status, waiting_for, wake_if_input, wake_if_child
            )
        finally:
            self.open_waits.pop(key, None)

    async def _wait(
        self,
        deadline: float | None,
        ready: Callable[[], Awaitable[bool]] | None,
        status: str,
        waiting_for: dict[str, Any],
        wake_if_input: str | None,
        wake_if_child: str | None,
    ) -> bool:
        while True:
            self.check("")
            if ready is not None and await self._ready(ready):
                return True
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                return False
            remaining = (deadline - now) if deadline is not None else INFINITY
            if remaining > self.host.suspend_after and self.can_suspend():
                await self.write(
                    run_update={
                        "status": status,
                        "wake_at": deadline,
                        "waiting_for": _serde.dumps(waiting_for),
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "updated_at": now,
                    },
                    suspend=True,
                    wake_if_input=wake_if_input,
                    wake_if_child=wake_if_child,
                )
                self.status = "suspended"
                # Unwinding runs the pipeline's finally blocks: journaled calls there must do nothing.
                self.request = "suspended"
                raise RunSuspending(status)
            step = self.host.poll_interval if ready is not None else remaining
            await self._pause(min(remaining, step))

    async def _ready(self, ready: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return await ready()
        except (RunInterrupted, asyncio.CancelledError):
            raise
        except Exception as exc:  # the database is away: look again at the next poll
            _log.warning(
                "run %s: could not check what it waits for (%s); retrying", self.run_id, exc
            )
            return False

    async def _pause(self, seconds: float) -> None:
        self.nudge.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waiters = [
            sleeper,
            asyncio.ensure_future(self.nudge.wait()),
            asyncio.ensure_future(self.interrupted.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def interrupt(self, request: str) -> None:
        """Called by the host: stop, stop_now, cancel, shutdown or lost."""
        if request == "cancel":
            if self.cancel_pending:
                return
            self.cancel_pending = True
            if self.task is not None and self._at_frontier():
                self.cancel_delivered = True
                self.task.cancel("durapipe: run cancelled")
            return
        if self.request in ("lost", "suspended"):
            return
        self.request = request
        self.interrupted.set()
        if request in ("stop_now", "lost", "shutdown_now"):
            for p in list(self.procs):
                asyncio.ensure_future(p.kill(request))

    def _at_frontier(self) -> bool:
        # Replay is done once every recorded key has been visited.
        return len(self.visited) >= len(self.records)


class ReplayFrontier(RunInterrupted):
    """A dry replay reached the first call that has no recorded result: everything before matched."""


def _key_order(key: str) -> list[int]:
    return [int(x) for x in key.split("/") if x.isdigit()]


# ---------------------------------------------------------------------- steps


def _decode_step(done: Any, key: str) -> Any:
    data = _serde.loads(done.data) or {}
    if done.kind == "step_failed":
        err = data.get("error", {})
        failure = StepFailed(done.label or key, err.get("type", "Error"), err.get("message", ""))
        failure.__durapipe_step__ = key  # type: ignore[attr-defined]
        raise failure
    return data.get("result")


async def call_step(
    fn: Callable[..., Any], opts: Any, is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    ctx = _CTX.get()
    if ctx is None or _IN_STEP.get() is not None:
        # Outside a run (or nested in another step): a plain call.
        if is_async:
            return await fn(*args, **kwargs)
        return fn(*args, **kwargs)
    ctx, branch = current(opts.name, step=True)
    key = branch.next_key()
    label = ctx.label(opts.name)
    ctx.check(key)
    done, evs = ctx.recorded(key, "step", opts.name)
    if done is not None:
        return _decode_step(done, key)
    tries = sum(1 for e in evs if e.kind == "step_retry")
    if any(e.kind == "step_started" for e in evs):
        ctx.emit(key, label, "warn", "running again: an earlier attempt did not finish")
    # The start is recorded so that a step killed mid-way shows up as an attempt; it is not
    # waited for (see RunContext.post), so it costs no commit of its own.
    ctx.post(ctx.event("step_started", step=key, name=opts.name, label=label))
    token = _IN_STEP.set(f"{ctx.run_id}.{key}")
    log_token = _STEP_LOG.set((key, label))
    try:
        while True:
            tries += 1
            try:
                if is_async:
                    result = await fn(*args, **kwargs)
                else:
                    result = await asyncio.to_thread(
                        contextvars.copy_context().run, fn, *args, **kwargs
                    )
                text = _serde.dumps(  # secrets masked
                    result, what=f"the result of step {label} ({type(result).__name__})"
                )
            except (RunInterrupted, asyncio.CancelledError):
                raise
            except Exception as exc:
                if isinstance(exc, SerializationError):
                    tries = opts.retries + 1  # retrying cannot fix the type
                err = error_data(exc)
                if tries <= opts.retries:
                    delay = min(opts.retry_delay * (opts.backoff ** (tries - 1)), opts.max_delay)
                    ctx.emit(
                        key,
                        label,
                        "warn",
                        f"attempt {tries} failed: {err['type']}: {err['message']}; retrying in {delay:g}s",
                    )
                    await ctx.record(
                        "step_retry",
                        step=key,
                        name=opts.name,
                        label=label,
                        data={"try": tries, "error": err},
                    )
                    await ctx.clock.sleep(delay)
                    continue
                ctx.emit(key, label, "error", f"failed: {err['type']}: {err['message']}")
                for tb_line in err["traceback"].rstrip().splitlines():
                    ctx.emit(key, label, "error", tb_line)
                await ctx.record(
                    "step_failed",
                    step=key,
                    name=opts.name,
                    label=label,
                    data={"error": err, "tries": tries},
                )
                failure = StepFailed(label, err["type"], err["message"])
                failure.__durapipe_step__ = key  # type: ignore[attr-defined]
                raise failure from exc
            await ctx.write(
                ctx.event(
                    "step_completed",
                    step=key,
                    name=opts.name,
                    label=label,
                    data='{"result":' + text + "}",
                )
            )
            return _serde.loads(text)
    finally:
        _IN_STEP.reset(token)
        _STEP_LOG.reset(log_token)


# ---------------------------------------------------------------------- exec


async def exec_(
    *argv: str | Secret,
    shell: bool = False,
    cwd: str | None = None,
    env: Mapping[str, str | Secret] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> _exec.ExecResult:
    """Run a command as a journaled step and return what it left (``dp.exec``).

    ::

        out = await dp.exec("git", "rev-parse", "HEAD")      # argv: no shell, no quoting
        await dp.exec("make test | tee test.log", shell=True)

    The command runs in its own process group, its output lines stream to the console and the
    run's logs, and the result (exit code, the last 64 KiB of stdout and stderr) is recorded: on
    replay it is returned without running the command again. A run that died while the command
    ran starts it again on resume (at least once). A stop with ``--now``, a cancel or a timeout
    kills the whole process group (SIGTERM, then SIGKILL).

    Args:
        *argv: the program and its arguments; ``dp.Secret`` values reach the command unmasked
            but show as ``***`` everywhere else.
        shell: run one command string with ``/bin/sh -c`` instead.
        cwd: the working directory (default: the worker's).
        env: the environment (replaces the worker's when given); values may be ``dp.Secret``.
        check: raise ``dp.ExecFailed`` on a non-zero exit (False: return the result anyway).
        timeout: seconds before the command is killed and the step fails.

    Returns:
        An :class:`ExecResult` (``exit_code``, ``stdout``, ``stderr``, ``duration``, ``ok``).

    Raises:
        ExecFailed: the command exited non-zero (with ``check``) or timed out.
        NotInPipeline: called outside a running pipeline.
    """
    from .errors import ExecFailed

    ctx, branch = current("exec")
    if not argv:
        raise ValueError("dp.exec needs a command: dp.exec('make', 'test')")
    if shell and len(argv) != 1:
        raise ValueError(
            "with shell=True pass one command string: dp.exec('ls | wc -l', shell=True)"
        )
    args = [str(a) for a in argv]  # what is shown and recorded: secrets as ***
    real_args = [reveal(a) for a in argv]
    real_env = {str(k): reveal(v) for k, v in env.items()} if env is not None else None
    key = branch.next_key()
    label = ctx.label("exec")
    ctx.check(key)
    done, evs = ctx.recorded(key, "step", "exec")
    if done is not None:
        data = _serde.loads(done.data) or {}
        res = data.get("result") or {}
        result = _exec.ExecResult(
            stdout=res.get("stdout", ""),
            stderr=res.get("stderr", ""),
            exit_code=res.get("exit_code", -1),
            duration=res.get("duration", 0.0),
        )
        if done.kind == "step_failed":
            failure = ExecFailed(
                label,
                args,
                res.get("exit_code"),
                res.get("stderr", ""),
                bool(data.get("timed_out")),
            )
            failure.__durapipe_step__ = key  # type: ignore[attr-defined]
            raise failure
        return result
    shown = args[0] if shell else _exec.quote(args)
    again = (
        " (again: the last attempt did not finish)"
        if any(e.kind == "step_started" for e in evs)
        else ""
    )
    ctx.emit(key, label, "info", f"$ {shown}{again}")
    # The start is durable before the command starts, so every run of it shows in the history
    # (a crash between the two leaves a start without a run, never a run without a start).
    # Its pid is known only after, and is recorded with the completion.
    await ctx.record(
        "step_started", step=key, name="exec", label=label, data={"argv": args, "host": HOST}
    )
    t0 = time.monotonic()
    proc = await _exec.start(real_args, shell=shell, cwd=cwd, env=real_env)
    proc.prefix = f"{ctx.prefix}.{label}"
    ctx.procs.add(proc)
    if ctx.request in ("stop_now", "lost", "shutdown_now"):  # it came while the start was written
        asyncio.ensure_future(proc.kill(ctx.request))
    try:
        result, timed_out = await _exec.wait(
            proc,
            timeout=timeout,
            on_line=lambda s, text: ctx.emit(key, label, s, text),
            drain=ctx.journal.flush_logs,
        )
    except asyncio.CancelledError:  # cancel, lost lease, shutdown: the group is killed at once
        proc.kill_now()
        why = "cancel" if ctx.cancel_delivered else (ctx.request or "")
        ctx.emit(key, label, "warn", _killed_line(why, -signal.SIGKILL, t0))
        raise
    finally:
        ctx.procs.discard(proc)
    if proc.killed_by in ("stop_now", "lost", "shutdown_now"):
        ctx.emit(key, label, "warn", _killed_line(proc.killed_by, result.exit_code, t0))
        raise RunStopping(proc.killed_by) if proc.killed_by != "lost" else LeaseLost(ctx.run_id)
    elapsed = time.monotonic() - t0
    payload = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "duration": round(elapsed, 3),
    }
    failed = timed_out or (check and result.exit_code != 0)
    why = f"timed out after {timeout:g}s" if timed_out else f"exit {result.exit_code}"
    ctx.emit(key, label, "error" if failed else "info", f"{why} in {_fmt_duration(elapsed)}")
    kind = "step_failed" if failed else "step_completed"
    await ctx.record(
        kind,
        step=key,
        name="exec",
        label=label,
        data={"result": payload, "timed_out": timed_out, "pid": proc.pid},
    )
    if failed:
        failure = ExecFailed(
            label, args, None if timed_out else result.exit_code, result.stderr, timed_out
        )
        failure.__durapipe_step__ = key  # type: ignore[attr-defined]
        raise failure
    # What the pipeline sees is what replay will see: secrets masked in both.
    clean = _serde.loads(_serde.dumps(payload))
    return _exec.ExecResult(**clean)


_KILL_REASONS = {
    "stop_now": "the run is stopping; the command runs again on resume",
    "lost": "this process lost the run's lease",
    "shutdown_now": "the worker is shutting down; the command runs again when the run continues",
    "cancel": "the run was cancelled",
}


def _killed_line(why: str, exit_code: int, t0: float) -> str:
    """The log line of a command durapipe ended: ``killed (SIGTERM) after 3.2s: the run is stopping…``."""
    if exit_code < 0:
        try:
            how = f"killed ({signal.Signals(-exit_code).name})"
        except ValueError:
            how = f"killed (signal {-exit_code})"
    else:  # it handled SIGTERM and exited by itself
        how = f"stopped by SIGTERM (exit {exit_code})"
    return f"{how} after {_fmt_duration(time.monotonic() - t0)}: {_KILL_REASONS.get(why) or why or 'the run was interrupted'}"


def _fmt_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def fmt_span(seconds: float) -> str:
    """5m, 1h30m, 2d — for 'Sleeping for ...'."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts[:2])


# ---------------------------------------------------------------------- sleep


async def sleep(duration: float | timedelta) -> None:
    """Sleep for ``duration`` (seconds or a ``timedelta``) on a durable timer (``dp.sleep``).

    The wake-up time is recorded: a run stopped, crashed or resumed elsewhere sleeps only what
    is left, and a replayed sleep that has fired returns at once. A worker parks a long sleep in
    the database (the run is ``sleeping``) and wakes it when it is due.

    Raises:
        ValueError: the duration is negative or not a number.
        NotInPipeline: called outside a running pipeline.
    """
    seconds = duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"dp.sleep needs a duration of 0 or more seconds, got {duration!r}")
    ctx, branch = current("sleep")
    key = branch.next_key()
    label = ctx.label("sleep")
    ctx.check(key)
    done, evs = ctx.recorded(key, "timer", "sleep")
    if done is not None:
        return
    started = next((e for e in evs if e.kind == "timer_started"), None)
    now = ctx.clock.now()
    if started is not None:
        wake_at = float((_serde.loads(started.data) or {})["wake_at"])
        left = wake_at - now
        if left > 0:
            ctx.emit(
                key,
                label,
                "info",
                f"Sleeping for the remaining {fmt_span(left)} (until {_clock_str(wake_at)})",
            )
    else:
        wake_at = now + seconds
        ctx.emit(
            key, label, "info", f"Sleeping for {fmt_span(seconds)} (until {_clock_str(wake_at)})"
        )
        await ctx.record(
            "timer_started",
            step=key,
            name="sleep",
            label=label,
            data={"seconds": seconds, "wake_at": wake_at},
            run_update={
                "status": "sleeping",
                "wake_at": wake_at,
                "updated_at": now,
                "waiting_for": _serde.dumps({"timer": label, "wake_at": wake_at}),
            },
        )
    await ctx.wait(
        key,
        deadline=wake_at,
        ready=None,
        status="sleeping",
        waiting_for={"timer": label, "wake_at": wake_at},
    )
    await ctx.write(
        ctx.event("timer_fired", step=key, name="sleep", label=label),
        run_update=ctx.after_wait(),
    )


def _clock_str(at: float) -> str:
    lt = time.localtime(at)
    if time.localtime().tm_yday != lt.tm_yday or at - time.time() > 86400:
        return time.strftime("%Y-%m-%d %H:%M:%S", lt)
    return time.strftime("%H:%M:%S", lt)


# ---------------------------------------------------------------------- values


async def _value(name: str, make: Callable[[], Any]) -> Any:
    ctx, branch = current(name)
    key = branch.next_key()
    ctx.check(key)
    done, _ = ctx.recorded(key, "value", name)
    if done is not None:
        return (_serde.loads(done.data) or {}).get("value")
    value = make()
    await ctx.write(
        ctx.event("value_recorded", step=key, name=name, data=_serde.dumps({"value": value}))
    )
    return value


async def now() -> float:
    """The current time (seconds since the epoch), recorded so replay sees the same."""
    ctx = _CTX.get()
    return float(await _value("now", ctx.clock.now if ctx else time.time))


async def uuid4() -> str:
    """A random UUID, recorded so replay sees the same."""
    return str(await _value("uuid4", lambda: str(_uuid.uuid4())))


async def random() -> float:
    """A random float in [0, 1), recorded so replay sees the same."""
    return float(await _value("random", _random.random))


def context() -> RunInfo:
    """Where the current code runs: run id, pipeline, version, attempt and (in a step) step id."""
    ctx = _CTX.get()
    if ctx is None:
        raise NotInPipeline("dp.context() works only inside a running pipeline or step")
    step = _IN_STEP.get()
    info = ctx.info()
    if step:
        return RunInfo(**{**info.__dict__, "step_id": step})
    return info


# ---------------------------------------------------------------------- patches


async def patched(patch_id: str) -> bool:
    """True when this run reaches here on code that has the change ``patch_id``.

    A run that recorded its history before the change was deployed replays with ``False``
    (take the old path); a run passing this point live records a marker and gets ``True``.
    It takes no step key, so adding it never makes old histories nondeterministic::

        if await dp.patched("notify-v2"):
            await notify_v2()
        else:
            await notify_v1()
    """
    ctx, _branch = current("patched")
    if patch_id in ctx.patches:
        return ctx.patches[patch_id]
    if not ctx._at_frontier():
        # Replaying history recorded before this code existed. The answer holds for the rest
        # of the run, so the old path is taken everywhere, also past the end of the history.
        ctx.patches[patch_id] = False
        return False
    ctx.patches[patch_id] = True
    if ctx.dry:
        return True
    await ctx.write(ctx.event("patch_marker", name=patch_id))
    return True


# ---------------------------------------------------------------------- gather


async def gather(
    *aws: Awaitable[Any], return_exceptions: bool = False, limit: int | None = None
) -> list[Any]:
    """Run journaled calls concurrently, each in its own deterministic step-key namespace.

    ::

        a, b = await dp.gather(dp.exec("make", "test-a"), dp.exec("make", "test-b"))

    Use it instead of ``asyncio.gather``: each branch gets its own place in the history, so
    replay matches calls to branches whatever order they finished in.

    Args:
        *aws: coroutines: calls like ``my_step(x)``, ``dp.exec(...)``, ``dp.run_subpipeline(...)``.
        return_exceptions: return exceptions in the result list instead of raising the first.
        limit: at most this many branches run at once.

    Returns:
        The results in the order of ``aws``.

    Raises:
        TypeError: an argument is a task or future, not a coroutine.
        NotInPipeline: called outside a running pipeline.
    """
    try:
        ctx, branch = current("gather")
        if limit is not None and limit < 1:
            raise ValueError("dp.gather(limit=...) must be 1 or more")
        for aw in aws:
            if not asyncio.iscoroutine(aw):
                raise TypeError(
                    "dp.gather takes coroutines (calls like my_step(x) or dp.exec(...)), not tasks or futures"
                )
    except BaseException:
        for aw in aws:  # refused: they will never run, so no "never awaited" warnings
            if asyncio.iscoroutine(aw):
                aw.close()
        raise
    key = branch.next_key()
    ctx.check(key)
    sem = asyncio.Semaphore(limit) if limit else None
    loop = asyncio.get_running_loop()

    async def run_branch(aw: Awaitable[Any]) -> Any:
        if sem is None:
            return await aw
        async with sem:
            return await aw

    tasks: list[asyncio.Task[Any]] = []
    ctx.gathers += 1
    try:
        for i, aw in enumerate(aws):
            b = Branch(f"{key}/{i}", None)
            cv = contextvars.copy_context()
            cv.run(_BRANCH.set, b)
            t = loop.create_task(run_branch(aw), context=cv)
            b.task = t
            tasks.append(t)
        if return_exceptions:
            results = list(await asyncio.gather(*tasks, return_exceptions=True))
            for r in results:  # control flow (stop, suspend, lost lease) is never a result
                if isinstance(r, RunInterrupted):
                    raise r
            return results
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        ctx.gathers -= 1
        for aw in aws:  # a branch cancelled before it began never awaits its call: close it
            if inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:  # type: ignore[arg-type]
                aw.close()  # type: ignore[attr-defined]
