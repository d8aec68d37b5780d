"""One execution of one run: its history, its lease, its writes and its waits.

A :class:`RunContext` is one execution attempt of one run. It holds the run's history indexed
by step key (:class:`~durapipe._engine.history.History`); the journaled calls
(:mod:`durapipe._engine.journaled`) replay from it and write through it: every event goes out
in the run's group-committed journal with the lease checked in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from .. import _exec, _serde
from .._kinds import KILLING, EventKind, Request, RunStatus
from .._secrets import scrub
from .._store.store import Op
from ..errors import (
    DurapipeError,
    LeaseLost,
    NonDeterminismError,
    RunInterrupted,
    RunStopping,
    RunSuspending,
)
from .context import LogRecord, RunHost, RunInfo
from .history import History
from .observe import active as _observer

INFINITY = math.inf
# A @dp.step's start is not waited for: it commits with the step's completion when the step ends
# within this many seconds (no commit of its own), else on its own after them.
STEP_START_GRACE = 0.01

_log = logging.getLogger("durapipe.engine")
# Requests a journaled call answers by stopping the run (it is handed back or stopped).
_STOPPING = (
    Request.STOP,
    Request.STOP_NOW,
    Request.SHUTDOWN,
    Request.SHUTDOWN_NOW,
    Request.HOLD,
)


def earliest(*instants: float | None) -> float | None:
    """The earliest of the instants given (None: none is)."""
    given = [t for t in instants if t is not None]
    return min(given) if given else None


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
        # The schedule and tick that started it (dp.context()); None for other runs.
        self.schedule: str | None = getattr(row, "schedule", None)
        self.scheduled_at: float | None = getattr(row, "scheduled_at", None)
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
        self.history = History(history)
        self.next_seq = self.history.last_seq
        # The history's parts replay and the host read (the same objects, not copies).
        self.records = self.history.records
        self.visited = self.history.visited
        self.patches = self.history.patches
        self.dry = dry  # upgrade check: replay only, stop at the first call with no recorded result
        # Tracing and metrics (observe.py): None unless something observes; a dry replay never.
        self.obs = None if dry else _observer()
        self.obs_data: dict[Any, Any] = {}  # what the observers keep of this execution
        self.started_data: str | None = (  # the run_started event's data (trace context)
            history[0].data if history and history[0].kind == EventKind.RUN_STARTED else None
        )
        self.labels: dict[str, int] = {}
        self.gathers = 0
        # What each wait in flight says about the run (status, waiting_for, wake_at), by step
        # key: when one of several dp.gather branches stops waiting, the run still waits.
        self.open_waits: dict[str, dict[str, Any]] = {}
        self.request: str | None = None  # a Request: what the host asked for (see interrupt())
        self.write_error: BaseException | None = None  # why a history write failed, if one did
        self.interrupted = asyncio.Event()
        self.nudge = asyncio.Event()
        # The pause shared by the run's polling waits (see _pause_shared) and how many await it.
        self._tick: asyncio.Future[None] | None = None
        self._tick_waiters = 0
        self.procs: set[_exec.Process] = set()
        self.cancel_pending = False
        self.cancel_delivered = False
        # The run's timeout as a recorded instant (durapipe_runs.deadline_at): at it the run is
        # cancelled as a timeout. Checked at every journaled call and by a timer (see time_out).
        self.deadline_at: float | None = getattr(row, "deadline_at", None)
        self.timed_out = False
        self.fatal: NonDeterminismError | None = None
        # Messages this execution is taking (dp.recv, dp.first): two branches of a dp.gather
        # waiting on one topic must not both take the oldest before either take is committed.
        self.taking: set[int] = set()
        self.task: asyncio.Task[Any] | None = None
        self.loop = asyncio.get_running_loop()
        self.status: str = RunStatus.RUNNING  # or "suspended" once it parked itself
        # Events recorded without waiting for them (a step's start): they go out with the run's
        # next history write, or on their own STEP_START_GRACE seconds later (see post()).
        self.unsent: list[dict[str, Any]] = []
        self._unsent_since = 0.0
        self._unsent_timer: asyncio.TimerHandle | None = None
        self._unsent_task: asyncio.Task[None] | None = None
        # dp.continue_as_new was called (a ContinueAsNew): the run ends continued, whatever
        # its unwinding raises after it (see durapipe._execution).
        self.continued: Any = None
        # dp.start_subpipeline started a child in this run (now or in its history): it may be
        # left unfinished when the run completes, and then ends with it.
        self.spawned = any(e.kind == EventKind.CHILD_SPAWNED for e in history)

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
            schedule=self.schedule,
            scheduled_at=self.scheduled_at,
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
        if self.request == Request.LOST:
            # A write failed (or the lease went): writing more could leave a gap in the seqs.
            raise LeaseLost(self.run_id)
        op = Op(
            run_id=self.run_id, owner=self.owner, attempt=self.attempt, events=list(events), **kw
        )
        try:
            await self.journal.submit(op)
        except LeaseLost:
            self.request = Request.LOST
            raise
        except (DurapipeError, Exception) as exc:
            # The journal already retried; this run can no longer trust its seq counter.
            self.request = Request.LOST
            self.write_error = exc
            raise LeaseLost(f"run {self.run_id}: history write failed: {exc}") from exc
        if self.obs is not None:
            for ev in events:
                if ev["step"] is not None and ev["run_id"] == self.run_id:
                    self.obs.call_event(self, ev)

    def check(self, key: str) -> None:
        """At every journaled call: deliver stops and pending cancellation."""
        if self.fatal is not None:
            raise self.fatal
        if self.continued is not None:  # unwinding after dp.continue_as_new: do nothing
            raise self.continued
        if self.deadline_at is not None and not self.cancel_pending and self.past_deadline():
            # Delivered as a cancellation at the first call the history has no result for.
            self.timed_out = self.cancel_pending = True
        request = self.request
        if request is None:  # nearly always: nothing asked for
            return
        if request in _STOPPING:
            raise RunStopping(request)
        if request == Request.LOST:
            raise LeaseLost(self.run_id)
        if request == Request.SUSPENDED:
            raise RunSuspending(Request.SUSPENDED)

    def after_wait(self) -> dict[str, Any]:
        """The run update once a wait ended: running, or what another branch still waits for."""
        now = self.clock.now()
        if self.open_waits:
            latest = list(self.open_waits.values())[-1]
            return {"wake_at": None, **latest, "updated_at": now}
        return {
            "status": RunStatus.RUNNING,
            "waiting_for": None,
            "wake_at": None,
            "updated_at": now,
        }

    def unvisited(self) -> list[str]:
        return self.history.unvisited()

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
        wake_if: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Wait until ``ready()`` or the deadline. -> True when ready, False at the deadline.

        Short waits stay in memory; a long one suspends the run (raises RunSuspending) when
        nothing else in the run is in flight. While it waits, step ``key`` is one of the run's
        open waits (see :meth:`after_wait`).
        """
        self.open_waits[key] = {
            "status": status,
            "waiting_for": _serde.dumps(waiting_for),
            "wake_at": deadline if status == RunStatus.SLEEPING else None,
        }
        try:
            return await self._wait(
                deadline, ready, status, waiting_for, wake_if_input, wake_if_child, wake_if
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
        wake_if: list[tuple[str, str]] | None = None,
    ) -> bool:
        while True:
            self.check("")
            # Cleared before looking, not after: a nudge that comes while ready() reads the
            # database (a message or input committed meanwhile) must end the pause that follows.
            self.nudge.clear()
            if ready is not None and await self._ready(ready):
                return True
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                return False
            remaining = (deadline - now) if deadline is not None else INFINITY
            # The run's own deadline ends the wait too (its timer cancels the run here): a run
            # due to time out sooner than suspend_after is kept, not suspended only to be taken
            # again at its deadline.
            if self.deadline_at is not None and not self.dry:
                awake = min(remaining, self.deadline_at - now)
            else:
                awake = remaining
            if awake > self.host.suspend_after and self.can_suspend():
                await self._suspend(
                    status,
                    run_update={
                        "status": status,
                        # The run's own deadline wakes it too: a worker then ends it timed out.
                        "wake_at": earliest(deadline, self.deadline_at),
                        "waiting_for": _serde.dumps(waiting_for),
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "updated_at": now,
                    },
                    wake_if_input=wake_if_input,
                    wake_if_child=wake_if_child,
                    wake_if=list(wake_if or ()),
                )
            if ready is not None and remaining >= self.host.poll_interval:
                await self._pause_shared()
                continue
            step = self.host.poll_interval if ready is not None else remaining
            await self._pause(min(remaining, step))

    async def _suspend(self, status: str, **write: Any) -> NoReturn:
        """Park the run on its wait: the suspension and the lease given up, in one write."""
        try:
            await self.write(suspend=True, **write)
        except asyncio.CancelledError:
            # Cancelled during the write (the run's deadline came, or a cancel): a cancelled
            # write is still settled, so the run is suspended all the same, and whoever takes it
            # next continues it (and times it out, or cancels it).
            self._suspended()
            raise
        self._suspended()
        raise RunSuspending(status)

    def _suspended(self) -> None:
        # From here on the run is not this process's. Unwinding runs the pipeline's finally
        # blocks: journaled calls there must do nothing (their side effects would run twice,
        # once here in vain and again where the run continues).
        self.status = "suspended"
        self.request = Request.SUSPENDED

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

    async def _pause_shared(self) -> None:
        """A polling wait's pause until its next look (a poll interval, a nudge or an
        interruption), shared by all the run's waits that poll: a gather of 10,000 child runs
        waits on one timer and one watch of the nudge, not on 30,000 tasks made anew at every
        nudge. A wait that joins late wakes early with the others (it only looks sooner)."""
        tick = self._tick
        if tick is None or tick.done():
            tick = self._tick = asyncio.ensure_future(self._pause(self.host.poll_interval))
        self._tick_waiters += 1
        try:
            await asyncio.shield(tick)
        finally:
            self._tick_waiters -= 1
            if self._tick_waiters == 0 and not tick.done():
                tick.cancel()

    async def _pause(self, seconds: float) -> None:
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

    def past_deadline(self) -> bool:
        """The run's timeout has passed (never in a dry replay)."""
        return (
            not self.dry and self.deadline_at is not None and self.clock.now() >= self.deadline_at
        )

    def time_out(self) -> None:
        """The run's deadline came: cancel it as a timeout (unless a cancel came first)."""
        if self.dry or self.cancel_delivered or (self.cancel_pending and not self.timed_out):
            return  # a replay, or a cancel of its own came first
        self.timed_out = True
        self.cancel_pending = False  # (check() may have marked it; deliver it now)
        self.interrupt(Request.CANCEL)

    def interrupt(self, request: str) -> None:
        """Called by the host: stop, stop_now, cancel, shutdown or lost."""
        if request == Request.CANCEL:
            if self.cancel_pending:
                return
            self.cancel_pending = True
            if self.task is not None and self._at_frontier():
                self.cancel_delivered = True
                self.task.cancel("durapipe: run cancelled")
            return
        if self.request in (Request.LOST, Request.SUSPENDED):
            return
        self.request = request
        self.interrupted.set()
        if request in KILLING:
            for p in list(self.procs):
                asyncio.ensure_future(p.kill(request))

    def _at_frontier(self) -> bool:
        # Replay is done once every recorded key has been visited.
        return self.history.at_frontier()
