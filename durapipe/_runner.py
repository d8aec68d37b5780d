"""The composition root of a process that executes runs: a worker, or a foreground run.

``durapipe worker`` is a Runner that claims any run of the pipelines it carries;
``durapipe run``/``resume``/``cancel`` and the testing kit use one (``durapipe._local``) to
execute one run tree in this process. The Runner wires the parts in ``durapipe._worker`` (leases
and heartbeats, wake-ups, log shipping, the supervisor of their side tasks) and owns what is
left: the lifecycle, claiming, and handing each claimed run to ``durapipe._execution``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from . import _config, _serde
from ._clock import SYSTEM_CLOCK, Clock
from ._definition import PipelineDef, load_target, registered
from ._engine import HOST, LogRecord, RunContext, error_data, install_log_handler
from ._execution import Outcome, execute
from ._ids import new_id
from ._kinds import COMPLETIONS, RESUMABLE_EXTRA, TERMINAL, EventKind, Request, RunStatus
from ._records import end_update, run_event, unleased_event
from ._store import Store
from ._store.store import Claimed, ClaimFilter, Op
from ._worker.leases import Leases
from ._worker.logs import LogShipper
from ._worker.outcomes import ChildOutcomes
from ._worker.schedules import Scheduler
from ._worker.supervisor import Supervisor
from ._worker.timers import Timers
from ._worker.wakeups import Wakeups
from .errors import DatabaseUnavailable, LeaseLost, TargetNotFound

log = logging.getLogger("durapipe.worker")

TIMERS_BUSY_CLAIM_EVERY = 0.1  # seconds between claims while due timers wait for slots


def _env_float(name: str, default: float) -> float:
    """A DURAPIPE_* setting, checked by the validator the command line uses (range, finite)."""
    setting = next(s for s in _config.ENV_SETTINGS if s.env == name)
    return setting.from_env(default)


class Runner:
    """Claims runs, runs them, keeps their leases alive, and writes their logs."""

    def __init__(
        self,
        store: Store,
        *,
        kind: str = "worker",
        pipelines: list[PipelineDef] | None = None,
        concurrency: int = 100,
        lease_ttl: float | None = None,
        poll_interval: float | None = None,
        suspend_after: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_record: Callable[[LogRecord], None] | None = None,
        on_input: Callable[[str, str, str | None, bool], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        log_file: str | None = None,
    ) -> None:
        self.store = store
        self.journal = store.journal
        self.kind = kind
        self.id = new_id("wkr")
        self.pipelines: dict[str, PipelineDef] = {p.name: p for p in (pipelines or [])}
        self.concurrency = concurrency
        self.lease_ttl = (
            lease_ttl if lease_ttl is not None else _env_float("DURAPIPE_LEASE_TTL", 30.0)
        )
        default_poll = 0.5 if store.is_sqlite else 2.0
        self.poll_interval = (
            poll_interval
            if poll_interval is not None
            else _env_float("DURAPIPE_POLL_INTERVAL", default_poll)
        )
        self.suspend_after = (
            suspend_after
            if suspend_after is not None
            else _env_float("DURAPIPE_SUSPEND_AFTER", 60.0)
        )
        self.clock = clock
        self.on_input = on_input  # a run waits for an input (or no longer): e.g. prompt for it
        self.on_claim: Callable[[int], None] | None = None  # runs claimed (metrics)
        self.held: dict[str, RunContext] = {}
        self._prefetched: dict[str, list[Any] | None] = {}  # histories read with the claim
        self.dead_owners: list[str] = []  # gone processes whose runs of the tree it takes at once
        self.tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()  # a run ended: a slot of `concurrency` is free
        self._timers: Timers | None = None
        self._closing = asyncio.Event()
        self._stopping = False
        # The parts.
        self.logs = LogShipper(store, log_file=log_file, on_record=on_record, on_tick=on_tick)
        self.leases = Leases(
            store,
            owner=self.id,
            held=self.held,
            clock=clock,
            lease_ttl=self.lease_ttl,
            poll_interval=self.poll_interval,
        )
        self.supervisor = Supervisor(self._side_task_died)
        self.outcomes = ChildOutcomes(store)
        self.wakeups = Wakeups(
            store,
            held=self.held,
            wake=self._wake,
            closing=self._closing,
            control_now=lambda: self.supervisor.once(self.leases.control_now()),
        )

    @property
    def failure(self) -> tuple[str, BaseException] | None:
        """The side task that died, and how (the worker then stops with a non-zero exit)."""
        return self.supervisor.failure

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        install_log_handler()
        self.journal.take_logs = self.logs.take
        self.journal.requeue_logs = self.logs.requeue
        now = self.clock.now()
        await self.store.register_worker(
            {
                "id": self.id,
                "host": HOST,
                "pid": os.getpid(),
                "kind": self.kind,
                "pipelines": json.dumps({n: p.version for n, p in self.pipelines.items()}),
                "concurrency": self.concurrency,
                "started_at": now,
                "heartbeat_at": now,
            }
        )
        # The queues its code declares (dp.Queue): their settings in code are the ones enforced.
        from ._queues import all_declared

        for queue in all_declared():
            if await self.store.get_queue(queue.name) != queue.limits:
                await self.store.set_queue(queue.limits, now=now)
        self.supervisor.start("durapipe-heartbeat", self.leases.heartbeat_loop())
        self.supervisor.start("durapipe-control", self.leases.control_loop())
        self.supervisor.start("durapipe-logs", self.logs.loop())
        self.supervisor.start(self.wakeups.name, self.wakeups.loop())
        if self.kind == "worker" and self.pipelines:  # workers fire their pipelines' schedules
            scheduler = Scheduler(
                self.store,
                pipelines=self.pipelines,
                owner=self.id,
                clock=self.clock,
                on_fired=self._wake.set,
            )
            self.wakeups.schedules_changed = scheduler.changed
            self.supervisor.start("durapipe-schedules", scheduler.loop())
        if self.kind == "worker" and self.pipelines:  # timers due soon: taken on time
            self._timers = timers = Timers(
                self.store,
                owner=self.id,
                flt=self.claim_filter(),
                clock=self.clock,
                lease_ttl=self.lease_ttl,
                suspend_after=self.suspend_after,
                free=lambda: self.concurrency - len(self.tasks),
                slot_freed=self._slot_freed,
                take=self._take,
                stopping=lambda: self._stopping,
            )
            self.supervisor.start("durapipe-timers", timers.loop())

    async def close(self) -> None:
        # The listener ends by itself (cancelling asyncpg mid-connect leaks a future); the rest stop.
        self._closing.set()
        await self.supervisor.stop(let_end=("durapipe-listen",))
        await self.logs.flush()
        await self.leases.release_all()
        with contextlib.suppress(Exception):
            await self.store.stop_worker(self.id, now=self.clock.now())
        self.logs.close()

    # ---------------------------------------------------------------- engine host

    def emit(self, rec: LogRecord) -> None:
        self.logs.emit(rec)

    def child_created(self, ctx: RunContext, child_id: str) -> None:
        self._wake.set()

    def input_waiting(self, ctx: RunContext, name: str, prompt: str | None, waiting: bool) -> None:
        if self.on_input is not None:
            self.on_input(ctx.run_id, name, prompt, waiting)

    async def fetch_input(self, run_id: str, name: str) -> tuple[int, Any] | None:
        row = await self.store.next_input(run_id, name)
        if row is None:
            return None
        return int(row.id), _serde.loads(row.value)

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        # Read with every other child a wait of this process asks about now (a gather of many
        # children), and its live link if it continued as new.
        row = await self.outcomes.get(child_id)
        if row is None:
            return None
        return row.status, _serde.loads(row.output), _serde.loads(row.error)

    async def fetch_message(
        self, run_id: str, topic: str, skip: set[int]
    ) -> tuple[int, Any, float] | None:
        row = await self.store.next_message(run_id, topic, skip=skip)
        if row is None:
            return None
        return int(row.id), _serde.loads(row.value), float(row.created_at)

    async def run_status(self, run_id: str) -> str | None:
        row = await self.store.get_run(run_id)
        return None if row is None else str(row.status)

    # ---------------------------------------------------------------- claiming

    def claim_filter(self, root_run_id: str | None = None) -> ClaimFilter:
        if root_run_id is not None:
            return ClaimFilter(root_run_id=root_run_id, dead_owners=tuple(self.dead_owners))
        return ClaimFilter(pipelines={n: p.version for n, p in self.pipelines.items()})

    async def serve(self, flt: ClaimFilter, *, until: asyncio.Future[Any] | None = None) -> None:
        """Claim and run runs until stopped (or until ``until`` is done)."""
        backoff = self.poll_interval
        claimed_at = 0.0
        while not self._stopping and (until is None or not until.done()):
            free = self.concurrency - len(self.tasks)
            rows: list[Any] = []
            pause = backoff
            self._wake.clear()  # before claiming: a wake-up that arrives meanwhile is kept
            timers_busy = False
            if free > 0 and self._timers is not None and self._timers.waiting:
                # Due timers wait for slots: the timers part fills each slot as it frees (by id).
                # A claim here then would order every due run to take one; look only now and
                # then (for pending runs and expired leases, which are not left waiting).
                since = asyncio.get_running_loop().time() - claimed_at
                if since < TIMERS_BUSY_CLAIM_EVERY:
                    free, pause = 0, TIMERS_BUSY_CLAIM_EVERY - since
                    timers_busy = True
            if free > 0:
                claimed_at = asyncio.get_running_loop().time()
                try:
                    got = await self.store.claim(
                        owner=self.id,
                        flt=flt,
                        limit=min(free, 50),
                        ttl=self.lease_ttl,
                        now=self.clock.now(),
                    )
                    rows = got.rows
                    backoff = pause = self.poll_interval
                    if got.next_at is not None:  # a timer or an expiring lease: be there on time
                        pause = min(pause, max(got.next_at - self.clock.now(), 0.0) + 0.002)
                except DatabaseUnavailable as exc:
                    log.warning("claim failed: %s", exc)
                    backoff = pause = min(backoff * 2, 10.0)
                else:
                    self._take(got)
            if rows and len(rows) == min(free, 50):
                continue
            waits: list[asyncio.Future[Any]] = []
            if not timers_busy:  # (each run that ends sets it: thousands a second then)
                waits.append(asyncio.ensure_future(self._wake.wait()))
            if until is not None:
                waits.append(until)
            sleeper = asyncio.ensure_future(asyncio.sleep(pause))
            waits.append(sleeper)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                if w is not until:
                    w.cancel()

    def _take(self, got: Claimed) -> None:
        """Run what a claim took (its histories were read with it)."""
        if got.rows and self.on_claim is not None:
            self.on_claim(len(got.rows))
        for row in got.rows:
            self._prefetched[row.id] = got.histories.get(row.id)
            self.spawn(row)

    def spawn(
        self, row: Any, *, resumed: str | None = None, cancel: bool = False
    ) -> asyncio.Task[str]:
        t = asyncio.ensure_future(self.execute(row, resumed=resumed, cancel=cancel))
        self.tasks.add(t)

        def done(task: asyncio.Task[str]) -> None:
            self.tasks.discard(task)
            self._wake.set()
            self._slot_freed.set()
            if not task.cancelled() and task.exception() is not None:
                log.error("run %s: its execution failed: %r", row.id, task.exception())

        t.add_done_callback(done)
        return t

    def resolve(self, row: Any) -> PipelineDef:
        pdef = self.pipelines.get(row.pipeline) or registered(row.pipeline)
        if pdef is None or (pdef.version != row.version and row.entrypoint and not self.pipelines):
            try:
                loaded = load_target(row.entrypoint)
            except TargetNotFound:
                if pdef is None:
                    raise
            else:
                if loaded.name == row.pipeline:
                    pdef = loaded
        if pdef is None:
            raise TargetNotFound(
                f"pipeline {row.pipeline!r} of run {row.id} cannot be found (entrypoint {row.entrypoint})"
            )
        return pdef

    # ---------------------------------------------------------------- executing

    async def execute(self, row: Any, *, resumed: str | None = None, cancel: bool = False) -> str:
        """Run one claimed run until it finishes, suspends, stops or is lost. -> final status."""
        owner = self.id
        try:
            pdef = self.resolve(row)
        except Exception as exc:
            self._prefetched.pop(row.id, None)
            await self._finish_simple(row, RunStatus.FAILED, EventKind.RUN_FAILED, error_data(exc))
            return "failed"
        if (row.recoveries or 0) > pdef.max_recoveries:
            await self._end_dead(row, pdef)
            return RunStatus.DEAD
        history = await self._load_history(row.id)
        ctx = RunContext(host=self, row=row, history=history, owner=owner)
        if cancel or row.requested == Request.CANCEL:
            ctx.interrupt(Request.CANCEL)
        elif row.requested in (Request.STOP, Request.STOP_NOW):
            ctx.interrupt(row.requested)
        stale = self.held.get(row.id)
        if stale is not None:
            # Its lease lapsed while this process still executed it (a heartbeat came too late)
            # and this process took it again: the older attempt is fenced out, so stop it now,
            # or it would go on running side effects no history can keep.
            log.warning(
                "run %s: its lease lapsed and was taken again here; dropping attempt %s",
                row.id,
                stale.attempt,
            )
            self.leases.drop(stale)
        self.held[row.id] = ctx
        try:
            outcome = (await execute(ctx, pdef, row, settler=self, resumed=resumed)).outcome
            if outcome is Outcome.LOST:
                await self.leases.dropped_run(ctx)
            return outcome
        finally:
            if self.held.get(row.id) is ctx:  # (not a newer attempt's)
                del self.held[row.id]
            if row.parent_run_id and row.parent_run_id in self.held:
                self.held[row.parent_run_id].nudge.set()

    async def _load_history(self, run_id: str) -> list[Any]:
        prefetched = self._prefetched.pop(run_id, None)
        if prefetched is not None:
            return prefetched
        delay = 0.1
        for _ in range(20):  # the database may be restarting: back off, then let the lease lapse
            try:
                return await self.store.events(run_id)
            except DatabaseUnavailable as exc:
                log.warning(
                    "run %s: cannot read its history (%s); retrying in %.1fs", run_id, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return await self.store.events(run_id)

    async def _end_dead(self, row: Any, pdef: PipelineDef) -> None:
        """End a run whose executions kept dying: ``dead``, with why and what it last said."""
        history = await self._load_history(row.id)
        done = {e.step for e in history if e.step and e.kind in COMPLETIONS}
        open_steps = [e for e in history if e.step and e.step not in done]
        where = (
            f" (last in step {open_steps[-1].label or open_steps[-1].step})" if open_steps else ""
        )
        died = int(row.recoveries)
        message = (
            f"its process died {died} times in a row while running it{where}, more than "
            f"max_recoveries={pdef.max_recoveries}; fix the cause, then: durapipe resume {row.id}"
        )
        lines = await self.store.last_log_lines(row.id, before_attempt=row.attempt)
        error = {"type": "RecoveryLimit", "message": message}
        self.emit(
            LogRecord(
                run_id=row.id,
                root_run_id=row.root_run_id,
                step=None,
                prefix=row.prefix,
                stream="error",
                line=f"dead: {message}",
                at=self.clock.now(),
                attempt=row.attempt,
            )
        )
        logs = [
            {"at": ln.at, "prefix": ln.prefix, "stream": ln.stream, "line": ln.line} for ln in lines
        ]
        await self._finish_simple(
            row, RunStatus.DEAD, EventKind.RUN_DEAD, error, data={**error, "logs": logs}
        )

    async def _finish_simple(
        self,
        row: Any,
        status: RunStatus,
        kind: EventKind,
        error: dict[str, Any],
        *,
        data: dict[str, Any] | None = None,
    ) -> None:
        now = self.clock.now()
        with contextlib.suppress(LeaseLost):
            history = await self.store.events(row.id)
            seq = history[-1].seq if history else 0
            event = run_event(
                row.id,
                seq + 1,
                kind,
                at=now,
                attempt=row.attempt,
                data=_serde.dumps(error if data is None else data),
            )
            await self.journal.submit(
                Op(
                    run_id=row.id,
                    owner=self.id,
                    attempt=row.attempt,
                    events=[event],
                    run_update=end_update(status, now=now, error=error),
                    wake_parent=row.parent_run_id,
                )
            )

    async def release(self, ctx: RunContext) -> None:
        await self.leases.release(ctx)

    async def cancel_children(self, run_id: str) -> None:
        """Cancel a finished parent's unfinished children (not the detached ones, which outlive
        it); each runs its own finally blocks."""
        for kid in await self.store.children(run_id):
            if not kid.detached:
                await self._cancel(kid)

    async def find_run(self, run_id: str) -> Any | None:
        return await self.store.get_run(run_id)

    async def cancel_child(self, child_id: str) -> None:
        """Cancel one child (``ChildHandle.cancel``): its live link if it continued as new."""
        kid = await self.store.live_link(child_id)
        if kid is not None:
            await self._cancel(kid)

    async def _cancel(self, kid: Any) -> None:
        if kid.status in TERMINAL:
            return
        now = self.clock.now()
        if kid.status == RunStatus.QUEUED:  # waiting in its queue: it ends there, never claimed
            from ._queues import cancel_queued

            if await cancel_queued(self.store, kid, now=now):
                return
        local = self.held.get(kid.id)
        if local is not None:
            local.interrupt(Request.CANCEL)
            return
        if (
            kid.status == RunStatus.PENDING
            and kid.attempt == 0
            and await self.store.finish_unleased(
                kid.id,
                status=RunStatus.CANCELLED,
                event=unleased_event(EventKind.RUN_CANCELLED, 0),
                now=now,
                expect=(RunStatus.PENDING,),
            )
        ):
            return  # never claimed: none of its code ran, so it ends here (no worker needed)
        if kid.status in RESUMABLE_EXTRA:
            await self.store.make_runnable(kid.id, now=now, statuses=RESUMABLE_EXTRA)
        await self.store.set_request(kid.id, Request.CANCEL, now=now, wake=True)
        self._wake.set()

    # ---------------------------------------------------------------- stopping

    def take_over(self, dead_owners: list[str]) -> None:
        """The runs of its tree held by these gone processes are taken at once, not at expiry."""
        self.dead_owners = list(dead_owners)

    def stop_claiming(self) -> None:
        """Claim nothing more: :meth:`serve` returns (the runs it executes go on)."""
        self._stopping = True
        self._wake.set()

    def nudge(self, run_id: str) -> None:
        """Have a run this process executes look again at what it waits for."""
        ctx = self.held.get(run_id)
        if ctx is not None:
            ctx.nudge.set()

    def running_commands(self) -> list[Any]:
        """The commands (``dp.exec``) the runs of this process are running now."""
        return [p for ctx in self.held.values() for p in ctx.procs]

    def interrupt_all(self, request: str) -> None:
        for ctx in list(self.held.values()):
            ctx.interrupt(request)

    async def shutdown(self, *, grace: float) -> None:
        """Stop claiming; let in-flight steps finish for ``grace`` seconds; release the rest."""
        self.stop_claiming()
        self.interrupt_all(Request.SHUTDOWN)
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            if pending:
                self.interrupt_all(Request.SHUTDOWN_NOW)
                for ctx in list(self.held.values()):
                    if ctx.task is not None:
                        ctx.task.cancel("durapipe: shutdown")
                await asyncio.wait(pending, timeout=5)
        for ctx in list(self.held.values()):
            await self.release(ctx)

    def _side_task_died(self, name: str, exc: BaseException) -> None:
        """A side task died: stop claiming and hand the runs back; the worker exits non-zero."""
        self.stop_claiming()
        self.interrupt_all(Request.SHUTDOWN)
