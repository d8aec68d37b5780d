"""The machinery that runs runs: claim, heartbeat, execute with the engine, finish, shut down.

``durapipe worker`` is a Runner that claims any run of the pipelines it carries;
``durapipe run`` and ``durapipe resume`` are Runners that execute one run tree in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import _config, _serde
from ._clock import SYSTEM_CLOCK, Clock
from ._definition import PipelineDef, load_target, registered
from ._engine import HOST, LogRecord, RunContext, error_data, install_log_handler
from ._execution import Outcome, execute
from ._ids import new_id
from ._kinds import EventKind, RunStatus
from ._records import end_update, run_event
from ._store import Store
from ._store import schema as S
from ._store.store import ClaimFilter, Op
from .errors import DatabaseUnavailable, LeaseLost, TargetNotFound

log = logging.getLogger("durapipe.worker")


def _env_float(name: str, default: float) -> float:
    """A DURAPIPE_* setting, checked by the validator the command line uses (range, finite)."""
    setting = next(s for s in _config.ENV_SETTINGS if s.env == name)
    return setting.from_env(default)


def _open_private(path: str) -> Any:
    """Open ``path`` to append, created readable by its owner only (0600, like the SQLite
    database): the log holds every line the runs print."""
    return open(  # noqa: SIM115 - closed in Runner.close
        path, "a", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, 0o600)
    )


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
        self.on_record = on_record
        self.on_input: Callable[[str, str, str | None, bool], None] | None = None
        self.on_tick: Callable[[], None] | None = None  # e.g. flush the console
        self.held: dict[str, RunContext] = {}
        self._prefetched: dict[str, list[Any] | None] = {}  # histories read with the claim
        self.dead_owners: list[str] = []  # gone processes of this host (set by `resume`)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.tasks_bg: set[asyncio.Future[Any]] = set()
        self.outcomes: dict[str, asyncio.Future[str]] = {}
        self._dropped_leases: dict[str, int] = {}  # run -> attempt: dropped after a failed write
        self._log_buf: list[dict[str, Any]] = []
        self._log_file = _open_private(log_file) if log_file else None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopping = False
        self._bg: list[asyncio.Task[Any]] = []
        self._listener: Any = None
        self.claimed = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        install_log_handler()
        self.journal.take_logs = self._take_logs
        self.journal.requeue_logs = self._requeue_logs
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
        loop = asyncio.get_running_loop()
        self._bg = [
            loop.create_task(self._heartbeat_loop(), name="durapipe-heartbeat"),
            loop.create_task(self._control_loop(), name="durapipe-control"),
            loop.create_task(self._log_loop(), name="durapipe-logs"),
        ]
        if not self.store.is_sqlite:
            self._bg.append(loop.create_task(self._listen_loop(), name="durapipe-listen"))
        else:
            self._bg.append(loop.create_task(self._sqlite_watch(), name="durapipe-watch"))

    async def close(self) -> None:
        # The listener ends by itself (cancelling asyncpg mid-connect leaks a future); the rest stop.
        self._closing.set()
        for t in self._bg:
            if t.get_name() != "durapipe-listen":
                t.cancel()
        for t in self._bg:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 15)
        self._bg = []
        await self.flush_logs()
        # An exiting process gives back what it still holds, so nobody waits for its leases.
        held = {c.run_id: c.attempt for c in self.held.values() if c.request != "lost"}
        leases = {**self._dropped_leases, **held}
        for run_id, attempt in leases.items():
            with contextlib.suppress(Exception):
                await self.store.release(
                    run_id, owner=self.id, attempt=attempt, now=self.clock.now()
                )
        with contextlib.suppress(Exception):
            await self.store.stop_worker(self.id, now=self.clock.now())
        if self._log_file:
            self._log_file.close()

    # ---------------------------------------------------------------- engine host

    def emit(self, rec: LogRecord) -> None:
        self._log_buf.append(
            {
                "run_id": rec.run_id,
                "root_run_id": rec.root_run_id,
                "step": rec.step,
                "prefix": rec.prefix,
                "stream": rec.stream,
                "at": rec.at,
                "line": rec.line,
                "attempt": rec.attempt,
            }
        )
        if self._log_file:  # JSON lines: one object per line, as `durapipe logs --json`
            row = self._log_buf[-1]
            self._log_file.write(
                "".join(
                    json.dumps({**row, "line": line}, ensure_ascii=False) + "\n"
                    for line in rec.line.split("\n")
                )
            )
        if self.on_record is not None:
            self.on_record(rec)

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
        row = await self.store.get_run(child_id)
        if row is None or row.status not in S.TERMINAL:
            return None
        return row.status, _serde.loads(row.output), _serde.loads(row.error)

    # ---------------------------------------------------------------- background

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                held = {
                    rid: ctx.attempt for rid, ctx in self.held.items() if ctx.status == "running"
                }
                lost, requests = await self.store.heartbeat(
                    worker_id=self.id, held=held, ttl=self.lease_ttl, now=self.clock.now()
                )
            except (
                DatabaseUnavailable,
                Exception,
            ) as exc:  # keep beating; the lease is the arbiter
                log.warning("heartbeat failed: %s", exc)
                continue
            for rid in lost:
                ctx = self.held.get(rid)
                if ctx is not None:
                    log.warning("run %s: lease lost; dropping it", rid)
                    ctx.interrupt("lost")
                    if ctx.task is not None:
                        ctx.task.cancel("durapipe: lease lost")
            self._deliver(requests)

    async def _control_loop(self) -> None:
        """Deliver stop/cancel requests promptly, and nudge runs waiting in memory."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self.held:
                continue
            try:
                requests = await self.store.requests_for(list(self.held))
            except Exception as exc:
                log.debug("control poll failed: %s", exc)
                continue
            self._deliver(requests)

    def _deliver(self, requests: dict[str, str]) -> None:
        for rid, req in requests.items():
            ctx = self.held.get(rid)
            if ctx is not None and ctx.request is None or (ctx is not None and req == "cancel"):
                ctx.interrupt(req)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if self.on_tick is not None:
                self.on_tick()
            await self.flush_logs()

    def _take_logs(self) -> list[dict[str, Any]]:
        rows, self._log_buf = self._log_buf, []
        return rows

    def _requeue_logs(self, rows: list[dict[str, Any]]) -> None:
        self._log_buf[:0] = _newest(rows)

    async def flush_logs(self) -> None:
        if not self._log_buf:
            return
        rows, self._log_buf = self._log_buf, []
        try:
            await self.store.write_logs(rows)
        except Exception as exc:
            log.warning("could not store %d log lines: %s", len(rows), exc)
            self._log_buf[:0] = _newest(rows)
        if self._log_file:
            self._log_file.flush()

    async def _listen_loop(self) -> None:
        """LISTEN for new runs, inputs and finished children; reconnect when the server goes."""
        import asyncpg

        dsn = self.store.plain_pg_dsn()
        while not self._closing.is_set():
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
            except Exception as exc:
                log.debug("LISTEN connection failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), 2)
                continue
            try:
                await conn.add_listener("durapipe", self._on_notify)
                self._wake.set()  # anything sent while we were not listening
                while not self._closing.is_set() and not conn.is_closed():
                    try:
                        await asyncio.wait_for(self._closing.wait(), 5)
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=5)
            except Exception as exc:
                log.debug("LISTEN connection lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    async def _sqlite_watch(self) -> None:
        """SQLite's LISTEN: PRAGMA data_version changes when another connection commits.

        Reading it costs microseconds and takes no lock, so every 50 ms is cheap; it wakes the
        claim loop and waiting runs promptly instead of at the next poll.
        """
        import sqlite3

        assert self.store.url.path is not None
        conn = sqlite3.connect(self.store.url.path, timeout=1, isolation_level=None)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(0.05)
                try:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if now != last:
                    last = now
                    self._on_notify(None, 0, "durapipe", "run")
        finally:
            conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith("input:"):
            ctx = self.held.get(payload[6:])
            if ctx is not None:
                ctx.nudge.set()
            return
        if payload == "control":
            for ctx in self.held.values():
                ctx.nudge.set()
            self._control_now()
            return
        self._wake.set()
        for ctx in self.held.values():
            ctx.nudge.set()

    def _control_now(self) -> None:
        async def once() -> None:
            with contextlib.suppress(Exception):
                self._deliver(await self.store.requests_for(list(self.held)))

        t = asyncio.ensure_future(once())
        self.tasks_bg.add(t)
        t.add_done_callback(self.tasks_bg.discard)

    # ---------------------------------------------------------------- claiming

    def claim_filter(self, root_run_id: str | None = None) -> ClaimFilter:
        if root_run_id is not None:
            return ClaimFilter(root_run_id=root_run_id, dead_owners=tuple(self.dead_owners))
        return ClaimFilter(pipelines={n: p.version for n, p in self.pipelines.items()})

    async def serve(self, flt: ClaimFilter, *, until: asyncio.Future[Any] | None = None) -> None:
        """Claim and run runs until stopped (or until ``until`` is done)."""
        backoff = self.poll_interval
        while not self._stopping and (until is None or not until.done()):
            free = self.concurrency - len(self.tasks)
            rows: list[Any] = []
            pause = backoff
            self._wake.clear()  # before claiming: a wake-up that arrives meanwhile is kept
            if free > 0:
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
                for row in rows:
                    self._prefetched[row.id] = got.histories.get(row.id)
                    self.spawn(row)
            if rows and len(rows) == min(free, 50):
                continue
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            if until is not None:
                waits.append(until)
            sleeper = asyncio.ensure_future(asyncio.sleep(pause))
            waits.append(sleeper)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                if w is not until:
                    w.cancel()

    def spawn(
        self, row: Any, *, resumed: str | None = None, cancel: bool = False
    ) -> asyncio.Task[str]:
        self.claimed += 1
        fut = self.outcomes.get(row.id)
        if fut is None or fut.done():
            self.outcomes[row.id] = asyncio.get_running_loop().create_future()
        t = asyncio.ensure_future(self.execute(row, resumed=resumed, cancel=cancel))
        self.tasks.add(t)

        def done(task: asyncio.Task[str]) -> None:
            self.tasks.discard(task)
            self._wake.set()
            f = self.outcomes.get(row.id)
            if f is not None and not f.done():
                if task.cancelled():
                    f.set_result("interrupted")
                elif task.exception() is not None:
                    f.set_exception(task.exception())  # type: ignore[arg-type]
                else:
                    f.set_result(task.result())

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
        history = await self._load_history(row.id)
        ctx = RunContext(host=self, row=row, history=history, owner=owner)
        if cancel or row.requested == "cancel":
            ctx.interrupt("cancel")
        elif row.requested in ("stop", "stop_now"):
            ctx.interrupt(row.requested)
        self.held[row.id] = ctx
        try:
            outcome = (await execute(ctx, pdef, row, settler=self, resumed=resumed)).outcome
            if outcome is Outcome.LOST:
                await self._dropped(ctx)
            return outcome
        finally:
            self.held.pop(row.id, None)
            if row.parent_run_id and row.parent_run_id in self.held:
                self.held[row.parent_run_id].nudge.set()

    async def _dropped(self, ctx: RunContext) -> None:
        """Say why this runner dropped a run: another holder took its lease, or a history write
        failed (the database refused it: disk full, a lost connection...). A lease that is still
        this runner's is given back, so `durapipe resume` or a worker takes the run at once."""
        try:
            now = await self.store.get_run(ctx.run_id)
        except Exception:
            now = None
        if now is not None and (now.lease_owner != ctx.owner or now.attempt != ctx.attempt):
            by = f"worker {now.lease_owner}" if now.lease_owner else "a client"
            log.warning(
                "run %s: lease lost to %s (attempt %s, now %s); dropped it without writing more",
                ctx.run_id,
                by,
                now.attempt,
                now.status,
            )
            return
        err = ctx.write_error
        if err is None:  # dropped without a failed write (durapipe.testing's crash): keep it
            log.debug("run %s: dropped; its lease is left to lapse", ctx.run_id)
            return
        if isinstance(err, DatabaseUnavailable):
            why = str(err)
        else:
            detail = (str(err).strip().splitlines() or [""])[0]
            why = f"the database refused the write: {type(err).__name__}: {detail}"
        # Kept, not given back now: this runner would only claim it again and repeat the step
        # against a database that refuses it. Its lease lapses, or is released when this exits.
        self._dropped_leases[ctx.run_id] = ctx.attempt
        log.warning(
            "run %s: could not write its history (%s); dropped it: it is released when this "
            "process exits (or its lease expires), and `durapipe resume %s` continues it",
            ctx.run_id,
            why,
            ctx.run_id,
        )

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

    async def _finish_simple(
        self, row: Any, status: RunStatus, kind: EventKind, error: dict[str, Any]
    ) -> None:
        now = self.clock.now()
        with contextlib.suppress(LeaseLost):
            history = await self.store.events(row.id)
            seq = history[-1].seq if history else 0
            event = run_event(
                row.id, seq + 1, kind, at=now, attempt=row.attempt, data=_serde.dumps(error)
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
        with contextlib.suppress(Exception):
            await self.store.release(
                ctx.run_id, owner=ctx.owner, attempt=ctx.attempt, now=self.clock.now()
            )

    async def cancel_children(self, run_id: str) -> None:
        """Cancel a finished parent's unfinished children; each runs its own finally blocks."""
        now = self.clock.now()
        for kid in await self.store.children(run_id):
            if kid.status in S.TERMINAL:
                continue
            local = self.held.get(kid.id)
            if local is not None:
                local.interrupt("cancel")
                continue
            if kid.status in ("stopped", "blocked"):
                await self.store.make_runnable(kid.id, now=now, statuses=("stopped", "blocked"))
            await self.store.set_request(kid.id, "cancel", now=now, wake=True)
            self._wake.set()

    async def _children(self, run_id: str) -> list[Any]:
        return await self.store.children(run_id)

    # ---------------------------------------------------------------- stopping

    def interrupt_all(self, request: str) -> None:
        for ctx in list(self.held.values()):
            ctx.interrupt(request)

    async def shutdown(self, *, grace: float) -> None:
        """Stop claiming; let in-flight steps finish for ``grace`` seconds; release the rest."""
        self._stopping = True
        self._wake.set()
        self.interrupt_all("shutdown")
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            if pending:
                self.interrupt_all("shutdown_now")
                for ctx in list(self.held.values()):
                    if ctx.task is not None:
                        ctx.task.cancel("durapipe: shutdown")
                await asyncio.wait(pending, timeout=5)
        for ctx in list(self.held.values()):
            await self.release(ctx)


async def dead_lease_holders(store: Store, root_run_id: str) -> list[str]:
    """The holders of leases in a run tree that are known gone, whose runs may be taken at once
    instead of after their leases expire: processes of this host that have exited (whether they
    said so, or were killed and could not)."""
    dead = []
    for w in await store.lease_holders(root_run_id):
        if w.host != HOST:
            continue  # another machine: only its lease expiring tells
        if w.stopped_at is not None or not _alive(int(w.pid)):
            dead.append(str(w.id))
    return dead


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wall() -> float:
    return time.time()


LOG_BACKLOG_BYTES = 16 * 1024 * 1024


def _newest(rows: list[dict[str, Any]], budget: int = LOG_BACKLOG_BYTES) -> list[dict[str, Any]]:
    """The newest log rows worth ``budget`` bytes: what is kept for retry while the database is
    away (a row can hold many lines of exec output, so the cap is on size, not on rows)."""
    total = 0
    for i in range(len(rows) - 1, -1, -1):
        total += len(rows[i]["line"]) + 64
        if total > budget:
            return rows[i + 1 :]
    return rows


async def drive_tree(
    runner: Runner, row: Any, *, resumed: str | None = None, cancel: bool = False
) -> str:
    """Execute one run here, and any children it starts, until the run ends or parks."""
    root = runner.spawn(row, resumed=resumed, cancel=cancel)
    serve = asyncio.ensure_future(
        runner.serve(runner.claim_filter(root_run_id=row.root_run_id), until=root)
    )
    try:
        status = await root
        # Children being cancelled with their parent finish here (their finally blocks run).
        settle = runner.clock.now() + 30
        while runner.tasks and runner.clock.now() < settle:
            await asyncio.wait(list(runner.tasks), timeout=1)
        return status
    finally:
        runner._stopping = True
        runner._wake.set()
        await serve
        if runner.tasks:
            runner.interrupt_all("stop_now")
            await asyncio.wait(list(runner.tasks), timeout=10)
