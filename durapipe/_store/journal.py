"""Group commit: the pending writes of every run in this process share one transaction.

Every step of every run goes through :class:`Journal`; the store's dialect commits each batch on
its raw driver (see ``journal_sql`` for the statements, ``sqlite`` and ``postgres`` for how).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _config
from . import errors
from .url import DatabaseURL, redact

log = logging.getLogger("durapipe.store")


@dataclass(slots=True, kw_only=True)
class Op:
    """One atomic change to one run's history, checked against its lease."""

    run_id: str
    owner: str | None  # None: no lease check (a client acting on an unleased run)
    attempt: int | None
    events: list[dict[str, Any]] = field(default_factory=list)
    run_update: dict[str, Any] | None = None
    new_runs: list[dict[str, Any]] = field(default_factory=list)
    consume_input: int | None = None
    consume_seq: int | None = None
    wake_parent: str | None = None  # a parent run to make runnable now (child finished)
    # When suspending: wake at once if what the run waits for arrived meanwhile (no lost wake-ups),
    # or if a stop or cancel was asked of it (``suspend``), checked under the lease's row lock.
    suspend: bool = False
    wake_if_input: str | None = None
    wake_if_child: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)  # log lines carried by the batch
    future: asyncio.Future[None] | None = None
    # messages and published state (dp.send, dp.recv, dp.set_event, dp.first):
    # messages to insert (run_id: the addressee, topic, value, sender, created_at), each waking
    # its addressee; a message this run takes (its seq in consume_seq); published keys to upsert
    # (key, value, seq, updated_at); and more things a suspending run wakes for:
    # ("input", name) | ("message", topic) | ("child", run_id).
    messages: list[dict[str, Any]] = field(default_factory=list)
    consume_message: int | None = None
    publish: list[dict[str, Any]] = field(default_factory=list)
    wake_if: list[tuple[str, str]] = field(default_factory=list)
    # Tags (dp.tag, --tag): set these keys of the run's tags (replacing a key's value); and
    # copy the run's tags to another run (a continue-as-new successor), after they are set.
    tags: dict[str, str] | None = None
    copy_tags_to: str | None = None


class Committer(Protocol):
    """What the journal needs of the store: commit a batch, and say when SQLite is locked."""

    url: DatabaseURL
    is_sqlite: bool

    @property
    def commits_in_place(self) -> bool: ...

    def commit_now(self, ops: list[Op]) -> list[BaseException | None] | None: ...

    async def commit_ops(self, ops: list[Op]) -> list[BaseException | None]: ...

    @property
    def awaits_in_place(self) -> bool: ...

    async def recorded(self, run_id: str, seq: int) -> bool: ...

    def can_append_now(self, op: Op) -> bool: ...

    async def append_now(self, op: Op) -> BaseException | None: ...

    def note_locked(self, locked: bool) -> None: ...


_FAST = os.environ.get("DURAPIPE_NO_INLINE_COMMIT") is None  # for A/B timing (bench/README.md)


class Journal:
    """Group commit: the pending ops of every run in this process share one transaction.

    A caller's ``submit`` returns once its op is durable (or raises LeaseLost). Connection
    failures are retried with backoff, so a database restart pauses runs instead of failing them.
    """

    def __init__(self, store: Committer, *, max_batch: int = 500) -> None:
        self._store = store
        self._pending: list[Op] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._max_batch = max_batch
        self.retry_for = _config.db_retry_seconds()
        self.batches = 0
        self.ops = 0
        # Held while a batch commits, by the journal task or by a caller committing its own op
        # in place: one statement at a time on the journal's connection.
        self._lock = asyncio.Lock()
        # Batches whose caller was cancelled while committing them in place: the journal task
        # finds out whether they committed and, if not, commits them (a cancelled step's
        # write is not lost halfway, as it is not when the journal task commits it).
        self._unsure: list[list[Op]] = []
        self.take_logs: Callable[[], list[dict[str, Any]]] | None = None
        self.requeue_logs: Callable[[list[dict[str, Any]]], None] | None = None
        # Told of each commit: its number of ops and seconds (durapipe worker --metrics-port).
        self.on_commit: Callable[[int, float], None] | None = None

    async def submit(self, op: Op) -> None:
        loop = asyncio.get_running_loop()
        op.future = loop.create_future()
        alone = (
            _FAST
            and not self._pending
            and not self._unsure  # a cancelled write not settled yet goes first
            and not self._lock.locked()
            and not getattr(loop, "_ready", True)
        )
        if alone and op.events and op.owner is not None and self._store.awaits_in_place:
            # PostgreSQL, a run's own write and nothing else ready on this loop: commit it from
            # the run's task, saving the hand-off to the journal task and back (two loop
            # iterations). A client's writes (starts, sends) keep batching.
            await self._commit_in_place(self._batch([op]))
            await op.future
            return
        if alone and self._store.commits_in_place:
            # Nothing else is ready to run on this loop, so nobody could join this op's batch
            # before it commits: on SQLite, commit it here, skipping the two loop iterations a
            # hand-off to the journal task costs (a run stepping alone: `durapipe run`).
            batch = self._batch([op])
            t0 = time.perf_counter()
            try:
                results = self._store.commit_now(batch)
            except Exception:
                results = None  # the journal task's path retries, isolates and reports it
            if results is not None and self.on_commit is not None:
                self.on_commit(len(batch), time.perf_counter() - t0)
            if results is not None:
                self._settle(batch, results)
                await op.future  # done: returns (or raises) without yielding to the loop
                return
            if len(batch) > 1 and self.requeue_logs is not None:
                self.requeue_logs(batch[-1].logs)
        self._pending.append(op)
        self._kick()
        await op.future

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="durapipe-journal"
            )
        assert self._wake is not None
        self._wake.set()

    async def _commit_in_place(self, batch: list[Op]) -> None:
        async with self._lock:
            try:
                if len(batch) == 1 and self._store.can_append_now(batch[0]):
                    # The common write (a step's events, nothing else): one statement, straight
                    # to the driver. Any failure takes the general path, which retries,
                    # classifies and reports it.
                    t0 = time.perf_counter() if self.on_commit is not None else 0.0
                    try:
                        result = await self._store.append_now(batch[0])
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        await self._commit(batch)
                    else:
                        if self.on_commit is not None:
                            self.on_commit(1, time.perf_counter() - t0)
                        self._settle(batch, [result])
                else:
                    await self._commit(batch)
            except asyncio.CancelledError:
                # Cancelled mid-statement (a sibling branch failed, the worker stops): the
                # statement may or may not have committed. The journal task settles it.
                for op in batch:
                    op.future = None  # nobody waits for it any more
                self._unsure.append(batch)
                self._kick()
                raise
        if self._pending:
            self._kick()  # ops that came while this one committed

    async def flush_logs(self) -> None:
        """Store the log lines buffered so far (they ride along with an empty op); never raises:
        rows that could not be stored go back to the buffer for the next write."""
        try:
            await self.submit(Op(run_id="", owner=None, attempt=None))
        except Exception as exc:
            log.debug("log flush failed: %s", exc)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._drain()

    async def _drain(self) -> None:
        while self._unsure:
            batch = self._unsure.pop(0)
            # The op's last event: a step's start and completion may be stored as one row,
            # under the completion's seq (journal_sql.event_rows).
            last = batch[0].events[-1]
            try:
                done = await self._store.recorded(last["run_id"], last["seq"])
            except Exception as exc:  # the journal's retries below will say what is wrong
                log.debug("could not look for a cancelled commit's event: %s", exc)
                done = False
            if not done:
                await self._commit(batch)
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            # Rows given to write_logs are older than the ones buffered now: none is left
            # behind for the next batch, so they get the lower ids.
            if any(op.logs for op in self._pending):
                batch += [op for op in self._pending if op.logs]
                self._pending = [op for op in self._pending if not op.logs]
            await self._commit(self._batch(batch))

    def _batch(self, ops: list[Op]) -> list[Op]:
        """``ops`` and the log lines written so far, which ride along: a line printed before a
        step completed is as durable as the step (no commit of its own on the hot path)."""
        rows = self.take_logs() if self.take_logs is not None else []
        if rows:
            ops.append(Op(run_id="", owner=None, attempt=None, logs=rows))
        return ops

    async def _commit(self, batch: list[Op]) -> None:
        delay = 0.05
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                results = await self._store.commit_ops(batch)
                self._store.note_locked(False)
                break
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if errors.is_integrity(exc):
                    if len(batch) == 1:
                        results = [exc]
                        break
                    for op in batch:  # isolate the op at fault; the others still commit
                        await self._commit([op])
                    return
                if not errors.is_retryable(exc) or time.monotonic() > deadline:
                    if (bad := errors.bad_database(self._store.url, exc)) is not None:
                        exc = bad  # a read-only file: one line saying so, not the driver's error
                    elif self._store.is_sqlite and errors.is_locked(exc):
                        exc = errors.locked_out(self._store.url, self.retry_for, exc)
                    results = [exc] * len(batch)
                    break
                if self._store.is_sqlite and errors.is_locked(exc):
                    self._store.note_locked(True)  # one line for the whole wait, not one a retry
                else:
                    log.warning(
                        "database write failed (%s: %s); retrying in %.2fs",
                        type(exc).__name__,
                        redact(str(exc)),
                        delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self.on_commit is not None:
            self.on_commit(len(batch), time.perf_counter() - t0)
        self._settle(batch, results)

    def _settle(self, batch: list[Op], results: list[BaseException | None]) -> None:
        self.batches += 1
        self.ops += len(batch)
        for op, res in zip(batch, results, strict=True):
            # Rows that rode along go back to the buffer; write_logs' caller gets the error.
            if op.logs and res is not None and op.future is None and self.requeue_logs is not None:
                self.requeue_logs(op.logs)
            fut = op.future
            if fut is None or fut.done():
                continue
            if res is None:
                fut.set_result(None)
            else:
                fut.set_exception(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def transaction(self, **kw: Any) -> str:
        """A ``@dp.transaction`` step: its statements and its completion event in one fenced
        transaction of its own, outside group commit (see ``Store.run_transaction``)."""
        run: Any = getattr(self._store, "run_transaction")  # noqa: B009  # a Store, not the protocol
        return str(await run(**kw))
