"""Client: drive runs from a program or the CLI without running them."""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from importlib import import_module
from typing import Any

from . import _serde
from ._client_schedules import ScheduleMethods
from ._definition import PipelineDef, load_target, registered
from ._ids import new_id, validate_run_id
from ._kinds import RESUMABLE_EXTRA, EventKind, Request, RunStatus
from ._policy import check_timeout
from ._queues import Queue, QueueView, cancel_queued
from ._records import new_run, run_event, unleased_event
from ._store import Store, open_store
from ._store import schema as S
from ._tag_rules import check_tags
from .errors import (
    ConfigError,
    InvalidInput,
    InvalidRunState,
    RunFailed,
    RunNotFound,
    SerializationError,
)

RESUMABLE = (*RESUMABLE_EXTRA, RunStatus.FAILED)
# The summary under `durapipe list` counts each status up to this many runs ("10000+" beyond).
LIST_COUNT_CAP = 10_000

# How a cancellation runs in this process (`Client.cancel(here=True)`): the layer that executes
# runs sits above the client, so it installs itself here (durapipe._local, imported by cancel
# when it is not yet) rather than being imported at the top of this module. Its third argument is the CLI's runner factory.
CancelHere = Callable[["Client", str, Any], Awaitable[str]]
_cancel_here: CancelHere | None = None


def install_cancel_here(fn: CancelHere) -> None:
    global _cancel_here
    _cancel_here = fn


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run as a program sees it (``Client.get``, ``Client.list``, the testing kit).

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        version: the pipeline version the run started on.
        status: ``pending``, ``running``, ``sleeping``, ``waiting``, ``stopped``, ``blocked``,
            ``completed``, ``failed``, ``cancelled``, ``aborted`` or ``continued``.
        inputs: the run's inputs.
        output: what the pipeline returned (when completed).
        error: ``{"type", "message", "traceback", "step"}`` when it failed.
        parent_run_id: the parent's id for a child run.
        root_run_id: the id of the top run of its tree.
        pinned: the run aborts rather than continue on another version.
        attempt: how many times a process has taken it.
        entrypoint: where its code is loaded from.
        created_at: when it was created (seconds since the epoch).
        updated_at: when it last changed.
        finished_at: when it ended.
        wake_at: when a sleeping run is due.
        waiting_for: what it waits for (a timer, an input, a child run).
        lease_owner: the worker or process holding it.
        tags: its tags (``--tag``, ``dp.tag``).
        continued_from: the run it continues (``dp.continue_as_new``).
        detached: a child started with ``detached=True`` (it outlives its parent).
        schedule: the schedule whose tick started it, or None.
        scheduled_at: that tick's time (seconds since the epoch), or None.
        queue: the queue it was started on (``dp.Queue``), or None.
        queue_key: its key in the queue (per-key limits), or None.
        priority: its priority in the queue (higher is taken first).
    """

    run_id: str
    pipeline: str
    version: str
    status: str
    inputs: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    parent_run_id: str | None
    root_run_id: str
    pinned: bool
    attempt: int
    entrypoint: str
    created_at: float
    updated_at: float
    finished_at: float | None
    wake_at: float | None
    waiting_for: Any
    lease_owner: str | None
    tags: dict[str, str] = field(default_factory=dict)
    continued_from: str | None = None
    detached: bool = False
    schedule: str | None = None
    scheduled_at: float | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int | None = None

    @classmethod
    def of(cls, row: Any, tags: dict[str, str] | None = None) -> RunView:
        return cls(
            run_id=row.id,
            pipeline=row.pipeline,
            version=row.version,
            status=row.status,
            inputs=_serde.loads(row.inputs) or {},
            output=_serde.loads(row.output),
            error=_serde.loads(row.error),
            parent_run_id=row.parent_run_id,
            root_run_id=row.root_run_id,
            pinned=bool(row.pinned),
            attempt=row.attempt,
            entrypoint=row.entrypoint,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            wake_at=row.wake_at,
            waiting_for=_serde.loads(row.waiting_for),
            lease_owner=row.lease_owner,
            tags=dict(tags or {}),
            continued_from=getattr(row, "continued_from", None),
            detached=bool(getattr(row, "detached", None)),
            schedule=getattr(row, "schedule", None),
            scheduled_at=getattr(row, "scheduled_at", None),
            queue=row.queue,
            queue_key=row.queue_key,
            priority=row.priority,
        )

    def to_json(self) -> dict[str, Any]:
        """The run as a dict of JSON values (as ``durapipe show --json`` prints it)."""
        d = asdict(self)
        return d


def event_json(ev: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": ev.seq,
        "kind": ev.kind,
        "step": ev.step,
        "name": ev.name,
        "label": ev.label,
        "at": ev.at,
        "attempt": ev.attempt,
    }
    if ev.data is not None:
        try:
            out["data"] = _serde.loads(ev.data)
        except ValueError:
            out["data"] = ev.data
    return out


def parse_inputs(pairs: list[str], input_json: str | None) -> dict[str, Any]:
    """``--input k=v`` (v as JSON when it parses, else a string) and ``--input-json '{...}'``."""
    inputs: dict[str, Any] = {}
    if input_json:
        try:
            data = _serde.loads(input_json)
        except ValueError as exc:
            raise InvalidInput(
                f"--input-json is not valid JSON ({exc.args[0] if exc.args else exc}); example: --input-json '{{\"n\": 3}}'"
            ) from None
        except RecursionError:
            raise InvalidInput("--input-json is nested too deeply to be read as JSON") from None
        if not isinstance(data, dict):
            raise InvalidInput(
                "--input-json must be a JSON object of input names to values, e.g. '{\"n\": 3}'"
            )
        inputs.update(data)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InvalidInput(
                f"--input {pair!r} is not NAME=VALUE (e.g. --input branch=main, --input n=3)"
            )
        if "\x00" in value:
            raise InvalidInput(f"--input {key}: values cannot contain NUL bytes")
        try:
            inputs[key] = _serde.parse_cli_value(value)
        except SerializationError as exc:
            raise InvalidInput(f"--input {key}: {exc}") from None
    return inputs


class Client(ScheduleMethods):
    """Start, inspect and steer runs from a program (asyncio), without running them.

    ::

        async with await dp.Client.connect("postgresql://app@db/app") as client:
            run_id = await client.start(deploy, branch="main")
            output = await client.result(run_id, timeout=600)

    Workers (``durapipe worker``) execute the runs it starts. ``Client(store)`` wraps a store
    opened with :func:`open_store` (the client then closes it on ``close()``). From synchronous
    code (Flask, Django, scripts) use :class:`SyncClient`, which has the same methods.
    """

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                f"Client(store) takes an open store, not {type(store).__name__}; "
                "to open a database by URL: client = await dp.Client.connect(url)"
            )
        self.store = store

    @classmethod
    async def connect(cls, url: str | None = None, *, migrate: bool | None = None) -> Client:
        """Open the database at ``url`` and return a client on it.

        Args:
            url: ``sqlite:///path.db`` or ``postgresql://user:password@host:port/dbname``;
                default ``DURAPIPE_DATABASE_URL``, else ``./durapipe.db``.
            migrate: True: bring the schema up to date here; False: do not check it; None
                (default): migrate a SQLite file, require an up-to-date PostgreSQL database.

        Raises:
            ConfigError: the URL is unusable, or the database is not migrated.
            DatabaseUnavailable: the database cannot be reached.
        """
        return cls(await open_store(url, migrate=migrate))

    async def close(self) -> None:
        """Close the client and its database connections."""
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- starting

    async def create_run(
        self,
        pdef: PipelineDef,
        inputs: dict[str, Any],
        *,
        run_id: str | None = None,
        pin: bool | None = None,
        owner: str | None = None,
        ttl: float = 30.0,
        tags: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None,
        place: dict[str, Any] | None = None,
    ) -> tuple[Any, bool]:
        """Insert a run (leased to ``owner`` when given; in a queue with ``place``, the
        columns ``Client.placement`` gives). -> (row, created).

        ``timeout`` (default: the pipeline's) becomes the run's recorded deadline."""
        checked_tags = check_tags(tags, where="--tag")
        if run_id is not None:
            why = validate_run_id(run_id)
            if why:
                raise InvalidInput(f"run id {run_id!r} is not usable: {why}")
        inputs = pdef.bind_inputs(inputs)
        text = _serde.dumps(inputs, what="the inputs")
        if not _serde.storable_text(pdef.entrypoint):
            raise ConfigError(
                f"the path of pipeline {pdef.name!r} ({pdef.entrypoint!r}) is not valid UTF-8 "
                "text, so it cannot be stored with the run; move or rename its file"
            )
        try:
            seconds = check_timeout("timeout", timeout)
        except ConfigError as exc:
            raise InvalidInput(str(exc)) from None
        if seconds is None:
            seconds = pdef.timeout
        rid = run_id or new_id("run")
        now = self.store_now()
        pinned = pdef.pin if pin is None else pin
        row = new_run(
            run_id=rid,
            pipeline=pdef.name,
            version=pdef.version,
            entrypoint=pdef.entrypoint,
            pinned=pinned,
            inputs=text,
            now=now,
            owner=owner,
            ttl=ttl,
            deadline_at=now + seconds if seconds is not None else None,
        )
        row.update(place or {})
        started = run_event(
            rid,
            1,
            EventKind.RUN_STARTED,
            at=now,
            attempt=row["attempt"],
            name=pdef.name,
            data=_serde.dumps(
                {
                    "inputs": inputs,
                    "version": pdef.version,
                    "entrypoint": pdef.entrypoint,
                    "pinned": pinned,
                    **({"timeout": seconds} if seconds is not None else {}),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    **({"tags": checked_tags} if checked_tags else {}),
                    **_trace_carrier(),
                }
            ),
        )
        existing, created = await self.store.create_run(row, [started], checked_tags)
        if not created and existing.pipeline != pdef.name:
            raise InvalidInput(
                f"run id {rid!r} is taken by a run of pipeline {existing.pipeline!r}"
            )
        return existing, created

    @staticmethod
    def store_now() -> float:
        import time

        return time.time()

    async def start(
        self,
        pipeline: PipelineDef | str,
        *,
        run_id: str | None = None,
        pin: bool | None = None,
        inputs: dict[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        timeout: float | timedelta | None = None,
        queue: Queue | str | None = None,
        priority: int | None = None,
        key: str | None = None,
        **kw_inputs: Any,
    ) -> str:
        """Queue a run for the workers and return its id.

        ::

            run_id = await client.start(deploy, branch="main")
            run_id = await client.start("myapp/pipelines.py:deploy", inputs={"branch": "main"})

        Starting is idempotent by ``run_id``: with the id of an existing run of the same
        pipeline, nothing is started and that run's id is returned.

        Args:
            pipeline: a ``@dp.pipeline``, its name (imported in this process), or a target
                ``FILE.py:NAME`` / ``package.module:NAME``.
            run_id: the run's id (default: a new one), e.g. an idempotency key of your own.
            pin: abort the run rather than continue it on another version (default: the
                pipeline's ``pin``).
            inputs: the inputs as a dict (for names that collide with these parameters).
            tags: the run's tags, ``{"env": "prod"}``: ``list(tags=...)`` finds runs by them.
                Keys are short identifiers, values text (at most 200 characters).
            timeout: seconds (or a ``timedelta``) the run may take from now, suspensions and
                resumes included (default: the pipeline's ``timeout``); past it the run is
                cancelled and ends ``timed_out``.
            queue: wait in this queue (a ``dp.Queue`` or the name of a declared one) until
                its limits let a worker take the run.
            priority: with ``queue``: higher is taken first (the queue must take priorities).
            key: with ``queue``: the queue's ``key_concurrency`` applies per key (``"prod"``).
            **kw_inputs: the inputs by name.

        Raises:
            ConfigError: an unknown pipeline or queue, inputs that do not fit it, an unusable
                run id or tag, a timeout that is not a finite number of seconds above 0.
            InvalidInput: a priority or key without a queue, or not fitting it.
        """
        pdef = self.resolve(pipeline)
        place = await self.placement(queue, priority=priority, key=key)
        row, _ = await self.create_run(
            pdef,
            {**(inputs or {}), **kw_inputs},
            run_id=run_id,
            pin=pin,
            tags=tags,
            timeout=timeout,
            place=place,
        )
        return str(row.id)

    async def placement(
        self, queue: Queue | str | None, *, priority: int | None, key: str | None
    ) -> dict[str, Any] | None:
        """The queue columns of a run to start, checked (None: not on a queue)."""
        from ._queues import check_name, declared, placement

        if queue is None:
            if priority is not None or key is not None:
                raise InvalidInput("a priority or key needs a queue: pass queue= (--queue) too")
            return None
        name = queue.name if isinstance(queue, Queue) else check_name(queue)
        code = queue if isinstance(queue, Queue) else declared(name)
        stored = await self.store.get_queue(name)
        if code is not None and stored != code.limits:  # declared in code: the code's settings
            await self.store.set_queue(code.limits, now=self.store_now())
            stored = code.limits
        if stored is None:
            raise ConfigError(
                f"there is no queue named {name!r}; declare it first, in code "
                f"(dp.Queue({name!r}, concurrency=N) in the pipeline's module) or with "
                f"`durapipe queue set {name} --concurrency N`"
            )
        return placement(stored, key=key, priority=priority)

    @staticmethod
    def resolve(pipeline: PipelineDef | str) -> PipelineDef:
        if isinstance(pipeline, PipelineDef):
            return pipeline
        if isinstance(pipeline, str):
            if ":" in pipeline or pipeline.endswith(".py"):
                return load_target(pipeline)
            found = registered(pipeline)
            if found is not None:
                return found
            raise ConfigError(
                f"no pipeline named {pipeline!r} is imported; pass the pipeline object or FILE.py:NAME"
            )
        raise ConfigError(f"{pipeline!r} is not a pipeline: decorate it with @dp.pipeline")

    # ---------------------------------------------------------------- reading

    async def row(self, run_id: str) -> Any:
        if not isinstance(run_id, str):
            raise InvalidInput(f"a run id is a string, not {type(run_id).__name__}")
        if not _serde.storable_text(run_id):  # NUL or invalid Unicode: no run has such an id
            raise RunNotFound(run_id)
        row = await self.store.get_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    async def get(self, run_id: str) -> RunView:
        """The run with this id, as it is now.

        Raises:
            RunNotFound: there is no such run.
        """
        row = await self.row(run_id)
        return RunView.of(row, (await self.store.tags_of([row.id])).get(row.id))

    async def _live_row(self, run_id: str) -> Any:
        """The run's row, or, when it continued as new, the row of its chain's live link."""
        row = await self.row(run_id)
        if row.status != RunStatus.CONTINUED:
            return row
        return await self.store.live_link(run_id) or row

    async def list(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        limit: int = 200,
        tags: Mapping[str, str] | None = None,
    ) -> builtins.list[RunView]:
        """Runs, newest first, like ``durapipe list``.

        Runs that continued as new (status ``continued``) are left out unless
        ``status="continued"`` asks for them: a chain shows as its live link.

        Args:
            status: only runs with this status (``pending``, ``running``, ``sleeping``,
                ``waiting``, ``stopped``, ``blocked``, ``completed``, ``failed``,
                ``cancelled``, ``aborted``, ``continued``).
            pipeline: only runs of the pipeline with this name.
            roots_only: leave out child runs.
            limit: at most this many runs.
            tags: only runs with all these tags (``{"env": "prod", "team": "infra"}``).
        """
        rows = await self._list_rows(status, pipeline, roots_only, limit, tags)
        found = await self.store.tags_of([r.id for r in rows])
        return [RunView.of(r, found.get(r.id)) for r in rows]

    async def _list_rows(
        self,
        status: str | None,
        pipeline: str | None,
        roots_only: bool,
        limit: int,
        tags: Mapping[str, str] | None,
    ) -> builtins.list[Any]:
        """The rows of :meth:`list`, its arguments checked."""
        if status is not None and status not in S.ACTIVE + S.RESUMABLE_EXTRA + tuple(S.TERMINAL):
            raise InvalidInput(f"unknown status {status!r}; one of: {', '.join(S.ALL_STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInput(f"limit {limit!r}: give a number of runs, 0 or more")
        limit = min(limit, 2**62)  # more than any database holds; fits SQLite and int8
        wanted = check_tags(tags, where="tag")
        if pipeline is not None and (not pipeline or not _serde.storable_text(pipeline)):
            return []  # no pipeline has such a name
        return await self.store.list_runs(
            status=status,
            pipeline=pipeline,
            roots_only=roots_only,
            limit=limit,
            tags=wanted,
            latest_only=True,
        )

    async def events(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The run's history, as the events of ``durapipe show RUN_ID --json``.

        Each is a dict with ``seq``, ``kind``, ``step``, ``name``, ``label``, ``at``, ``attempt``
        and, when it has one, ``data``.

        Raises:
            RunNotFound: there is no such run.
        """
        await self.row(run_id)
        return [event_json(e) for e in await self.store.events(run_id)]

    async def result(self, run_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Any:
        """Wait for the run to end and return its output.

        A run that continued as new (``dp.continue_as_new``) is followed along its chain: the
        output is that of the link that ends otherwise.

        Args:
            run_id: the run.
            timeout: seconds to wait at most (None: until it ends).
            poll: seconds between two looks at the run, at most: the first looks come sooner
                (10 ms, then twice as long each time), so a quick run is answered quickly.

        Raises:
            RunFailed: the run failed, was cancelled, aborted or timed out, or is blocked or dead.
            TimeoutError: it did not end within ``timeout``.
            RunNotFound: there is no such run.
        """
        if timeout is not None and math.isnan(timeout):
            raise InvalidInput("timeout nan: give a number of seconds")  # it would never come
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = min(0.01, poll)
        while True:
            row = await self._live_row(run_id)
            if row.status == "completed":
                return _serde.loads(row.output)
            if row.status in S.TERMINAL or row.status in ("blocked", "dead"):  # (a person's turn)
                raise RunFailed(row.id, row.status, _serde.loads(row.error))
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"run {run_id} is still {row.status} after {timeout:g}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, poll)

    # ---------------------------------------------------------------- steering

    async def send_input(
        self, run_id: str, name: str, value: Any, *, by: str | None = None
    ) -> None:
        """Deliver ``value`` for ``dp.await_input(name)`` in the run, like ``durapipe input``.

        The value (any JSON value) is kept until the run asks for it; several values for one
        name are taken in order. A run that continued as new passes it to its chain's live link.

        Args:
            run_id: the run.
            name: the input's name, as in ``dp.await_input(name)``.
            value: any JSON value.
            by: who sends it (e.g. ``"ui:10.0.0.7"``), recorded in the run's log.

        Raises:
            InvalidRunState: the run has ended.
            RunNotFound: there is no such run.
        """
        row = await self._live_row(run_id)
        run_id = row.id
        if row.status in ("completed", "cancelled", "aborted"):
            raise InvalidRunState(f"run {run_id} has ended ({row.status}); it takes no more input")
        if not _serde.storable_text(name) or not name or len(name) > 200:
            raise InvalidInput(
                "an input name is 1-200 characters of valid Unicode without NUL bytes"
            )
        by = _check_by(by)
        text = _serde.dumps(value, what=f"input {name!r}")
        if by is not None:  # first: the input may wake the run, whose next attempt fences logs
            await self._note(row, f"Input '{name}' sent by {by}")
        await self.store.send_input(run_id, name, text, now=self.store_now())

    async def stop(self, run_id: str, *, now: bool = False, by: str | None = None) -> str:
        """Stop a run at its next journaled call, like ``durapipe stop``.

        Args:
            run_id: the run.
            now: also kill a command it is running.
            by: who stops it (e.g. ``"ui:10.0.0.7"``), recorded in the run's log (and in its
                ``run_stopped`` event when the run is stopped here).

        Returns:
            ``"stopped"`` (nobody held it: it is stopped now) or ``"requested"`` (the process
            running it stops it at its next journaled call).

        Raises:
            InvalidRunState: the run has ended, is already stopped, or is being cancelled.
            RunNotFound: there is no such run.
        """
        return await steer(self, run_id, "stop_now" if now else "stop", by=_check_by(by))

    async def cancel(
        self,
        run_id: str,
        *,
        here: bool = True,
        by: str | None = None,
        _runner_for: Callable[[PipelineDef], Any] | None = None,
    ) -> str:
        """Cancel a run, like ``durapipe cancel``: cancellation is raised at its current await,
        so its ``finally`` blocks run.

        Args:
            run_id: the run.
            here: run the cancellation of a suspended run in this process when its code can
                be loaded here (False: leave it to a worker).
            by: who cancels it (e.g. ``"ui:10.0.0.7"``), recorded in the run's log (and in its
                ``run_cancelled`` event when the run is cancelled here at once).

        Returns:
            ``"requested"`` (the process holding it cancels it at its current await),
            ``"cancelled"`` (it was suspended, sleeping or waiting: its cancellation ran, here
            or by a worker that took it first), or ``"queued"`` (its code cannot be loaded
            here, or ``here=False``: a worker that carries its pipeline runs the cancellation).

        Raises:
            InvalidRunState: the run has already ended.
            RunNotFound: there is no such run.
        """
        # steer acts on a chain's live link (continue-as-new) and reads the run once: a second
        # read here could see the run change between the two (held, then parked).
        what = await steer(self, run_id, Request.CANCEL, by=_check_by(by))
        if what == "queued" and here and _cancel_here is None:
            # `import durapipe` no longer imports every module at once: the layer that runs
            # cancellations here installs itself when it is imported, so import it now.
            import_module("durapipe._local")
        if what != "queued" or not here or _cancel_here is None:
            return what
        # Nobody holds it: its cancellation runs here (the CLI's runner prints its output).
        live = (await self._live_row(run_id)).id
        return await _cancel_here(self, live, _runner_for)

    async def resume(self, run_id: str, *, by: str | None = None) -> None:
        """Make a stopped, failed, blocked or dead run runnable again for the workers (a dead
        run's recovery count starts again).

        Args:
            run_id: the run.
            by: who resumes it (e.g. ``"ui:10.0.0.7"``), recorded in the run's log.

        Raises:
            InvalidRunState: the run has completed, or was cancelled, aborted or timed out.
            RunNotFound: there is no such run.
        """
        by = _check_by(by)
        row = await self._live_row(run_id)  # a chain (continue-as-new): its live link
        run_id = row.id
        await self.check_resumable(row)
        if row.status in RESUMABLE:
            if by is not None:  # first: a worker's claim of the resumed run fences its logs
                await self._note(row, f"Resumed by {by}")
            await self.store.make_runnable(run_id, now=self.store_now(), statuses=RESUMABLE)

    async def _note(self, row: Any, line: str) -> None:
        """Add an ``info`` line to a run's log (who steered it), with the run's prefix."""
        await self.store.write_logs(
            [
                {
                    "run_id": row.id,
                    "root_run_id": row.root_run_id,
                    "step": None,
                    "prefix": row.prefix,
                    "stream": "info",
                    "at": self.store_now(),
                    "line": line,
                    # Log lines are fenced by the run's attempt: a resumed run's next claim
                    # bumps it, so the line is written at the attempt it has now.
                    "attempt": row.attempt,
                }
            ]
        )

    # ---------------------------------------------------------------- queues

    async def set_queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = 1,
        rate: tuple[int, str | float] | None = None,
        priority: bool = False,
    ) -> QueueView:
        """Declare a queue, or replace its settings, like ``durapipe queue set``.

        The settings are those of :class:`Queue` (a limit left out is no limit); they apply
        from the next claim of every worker. A queue declared in code gets its code's settings
        back when a worker loading that code starts.

        Raises:
            ConfigError: a limit below 1 or a malformed rate (nothing is changed).
        """
        from ._queues import limits_of

        limits = limits_of(name, concurrency, key_concurrency, rate, priority)
        await self.store.set_queue(limits, now=self.store_now())
        return next(v for v in await self.queues() if v.name == name)

    async def queues(self) -> builtins.list[QueueView]:
        """Every queue with its limits and where it stands, like ``durapipe queues``."""
        now = self.store_now()
        return [QueueView.of(lim, stats) for lim, stats in await self.store.queue_stats(now=now)]

    async def queue_places(self, run_ids: builtins.list[str]) -> dict[str, tuple[str, int]]:
        """For the runs still waiting in a queue: (their queue, how many runs are ahead)."""
        return await self.store.queue_places(run_ids)

    async def check_resumable(self, row: Any) -> None:
        """Raise InvalidRunState, changing nothing, when resuming ``row`` is refused."""
        _check_resumable(row)
        await check_failure_retryable(self.store, row)

    # ---------------------------------------------------------------- messages, published state

    async def send(
        self, run_id: str, topic: str, value: Any = None, *, by: str | None = None
    ) -> None:
        """Send ``value`` to a run on ``topic``, like ``durapipe send``; it takes it with
        ``dp.recv(topic)``.

        The message (any JSON value, at most 1 MB encoded) is kept until the run takes it;
        messages of one topic are taken in the order they were sent. A run suspended waiting
        for it is woken. ``by`` (who sends it, e.g. ``"ui:10.0.0.7"``) is recorded in the
        run's log.

        Raises:
            InvalidInput: the topic is not a short identifier (letters, digits, ``_ - . :``;
                at most 100 characters).
            SerializationError: the value is not JSON or is too large.
            InvalidRunState: the run has ended.
            RunNotFound: there is no such run.
        """
        from . import _client_messages

        await _client_messages.send(self, run_id, topic, value, by=_check_by(by))

    async def get_event(
        self, run_id: str, key: str, *, wait: float | None = None, default: Any = None
    ) -> Any:
        """The latest value the run published under ``key`` with ``dp.set_event`` (``durapipe
        events``). Reads never replay the run nor touch its lease: it may be running,
        waiting or finished.

        Args:
            run_id: the run.
            key: the key, as given to ``dp.set_event``.
            wait: seconds to wait for the key to be published when it is not yet (woken by the
                database's change notifications, not a tight poll); None or 0: do not wait.
                Waiting ends early when the run ends without publishing it.
            default: what to return when the key is not published.

        Raises:
            InvalidInput: the key is not a short identifier, or ``wait`` is negative.
            RunNotFound: there is no such run.
        """
        from . import _client_messages

        return await _client_messages.get_event(self, run_id, key, wait=wait, default=default)

    async def published(self, run_id: str) -> dict[str, Any]:
        """Every key the run published with ``dp.set_event`` and its latest value, by key.

        Raises:
            RunNotFound: there is no such run.
        """
        from . import _client_messages

        return await _client_messages.published(self, run_id)

    async def fork(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        inputs: dict[str, Any] | None = None,
        new_run_id: str | None = None,
        by: str | None = None,
    ) -> str:
        """Start a new run from part of a run's history, like ``durapipe fork --start``.

        The new run's history is a copy of the run's calls before ``from_step``; it continues
        from there with the code loaded here, and is queued for the workers. Children that
        completed before that step are reused as results. The new run links back to the run
        (``durapipe show`` prints both ways); the run itself is not changed.

        Args:
            run_id: the run to fork (a top-level run that no process holds).
            from_step: the first step to run again, as ``durapipe show`` prints it (a key such
                as ``3`` or ``5/1/2``, or a name such as ``build_1``); default: the step whose
                failure failed the run, else its first interrupted call. ``"1"`` starts over.
            inputs: inputs that replace the run's own (the others are kept).
            new_run_id: the new run's id (default: a new one).
            by: who forks it (kept with the link; default: the OS user).

        Returns:
            The new run's id.

        Raises:
            InvalidInput: an unknown step, one after the last recorded call, or a taken id.
            InvalidRunState: a process holds the run, or it is a child run.
            ConfigError: its code does not load here, or a pinned run's version is not loaded.
            RunNotFound: there is no such run.
        """
        from ._repair import fork_run

        row, _ = await fork_run(
            self, run_id, from_step=from_step, inputs=inputs, new_run_id=new_run_id, by=by
        )
        return str(row.id)

    async def edit(
        self,
        run_id: str,
        step: str,
        result: Any,
        *,
        reason: str,
        by: str | None = None,
        rerun_after: bool = True,
    ) -> dict[str, Any]:
        """Supersede the result recorded at a step of a stopped, failed or blocked run, like
        ``durapipe edit``; ``resume`` then continues the run with the new value.

        The edit is appended to the run's history with who made it, when, why and the old value;
        nothing recorded is deleted.

        Args:
            run_id: the run.
            step: the step, as ``durapipe show`` prints it (a key or a name).
            result: the new result (any JSON value); for a ``dp.exec``, a dict such as
                ``{"stdout": "...", "exit_code": 0}``.
            reason: why (required).
            by: who edits it (default: the OS user).
            rerun_after: True (default): the calls after the step run again on resume;
                False: they keep their recorded results.

        Returns:
            The edit as recorded: ``step``, ``label``, ``old``, ``new``, ``reason``, ``by``,
            ``rerun_after``.

        Raises:
            InvalidInput: an unknown step, a call with no result (a sleep), a result that is
                not JSON or too large, a missing reason.
            InvalidRunState: the run is active or held (stop it first) or has ended (fork it).
            RunNotFound: there is no such run.
        """
        from ._repair import edit_result

        return await edit_result(
            self, run_id, step, result, reason=reason, by=by, rerun_after=rerun_after
        )


class AdminClient(Client):
    """The Client plus what the command line (and an operator's UI) reads and holds: whole
    histories as rows, run trees, logs, workers, pipeline holds. Not API."""

    @classmethod
    async def open(cls, url: str | None = None) -> AdminClient:
        """Open the database at ``url`` (as :meth:`Client.connect`)."""
        return cls(await open_store(url))

    async def __aenter__(self) -> AdminClient:
        return self

    async def live_row(self, run_id: str) -> Any:
        """The run's row, or that of its chain's live link when it continued as new."""
        return await self._live_row(run_id)

    async def successor(self, row: Any) -> str | None:
        """The run that continues ``row`` (dp.continue_as_new), if it continued."""
        if row.status != RunStatus.CONTINUED:
            return None
        return await self.store.successor(row.id, row.chain_id or row.id)

    async def history(self, run_id: str) -> builtins.list[Any]:
        """The run's history as event rows (``events`` gives them as dicts)."""
        return await self.store.events(run_id)

    async def children(self, run_id: str) -> builtins.list[Any]:
        return await self.store.children(run_id)

    async def tree(self, root_run_id: str) -> builtins.list[Any]:
        """Every run of a run tree."""
        return await self.store.list_runs(root_run_id=root_run_id, limit=100_000)

    async def overview(
        self,
        *,
        status: str | None,
        pipeline: str | None,
        roots_only: bool,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Any], dict[str, int], dict[str, Any]]:
        """The rows ``durapipe list`` shows, the counts by status and the rows' timelines.

        A status with more than ``LIST_COUNT_CAP`` runs counts ``LIST_COUNT_CAP + 1`` ("more"):
        the summary costs the same with a year of history as with a day's."""
        rows = await self._list_rows(status, pipeline, roots_only, limit, tags)
        counts = await self.store.count_by_status(
            pipeline=pipeline, roots_only=roots_only, cap=LIST_COUNT_CAP
        )
        return rows, counts, await self.store.timelines([r.id for r in rows])

    async def read_logs(self, root_run_id: str, *, after_id: int) -> builtins.list[Any]:
        return await self.store.read_logs(root_run_id, after_id=after_id)

    async def holds(self) -> builtins.list[Any]:
        return await self.store.holds()

    async def is_held(self, pipeline: str, version: str) -> bool:
        """Whether `durapipe stop --pipeline` holds this pipeline (all versions, or this one)."""
        return any(
            h.pipeline == pipeline and h.version in ("", version) for h in await self.holds()
        )

    async def hold(self, pipeline: str, version: str | None) -> int:
        """Hold a pipeline (or one version): its running runs pause. -> how many were asked."""
        now = self.store_now()
        await self.store.hold(pipeline, version, now=now)
        return await self.store.request_for_pipeline(pipeline, version, Request.HOLD, now=now)

    async def unhold(self, pipeline: str, version: str | None) -> int:
        return await self.store.unhold(pipeline, version)

    async def live_workers(self, *, now: float) -> builtins.list[Any]:
        return await self.store.live_workers(now=now, stale_after=120)

    async def held_counts(self) -> dict[str, int]:
        return await self.store.held_counts()

    async def worker(self, worker_id: str) -> Any:
        return await self.store.get_worker(worker_id)

    async def fork_links(self, run_id: str) -> tuple[Any, builtins.list[Any]]:
        """-> (the link to the run it was forked from or None, the links of its forks)."""
        return await self.store.fork_links(run_id)

    async def counts(
        self, *, pipeline: str | None, roots_only: bool, tags: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """How many runs there are of each status (the summary under ``durapipe list``);
        ``tags``: of the runs with all of them (the web UI's tag filter)."""
        return await self.store.count_by_status(
            pipeline=pipeline, roots_only=roots_only, tags=check_tags(tags, where="tag")
        )

    async def timelines(self, run_ids: builtins.list[str]) -> dict[str, Any]:
        """The events working time is computed from, for several runs (``durapipe list``)."""
        return await self.store.timelines(run_ids)

    async def page(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        since: float | None = None,
        until: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
        tags: Mapping[str, str] | None = None,
    ) -> builtins.list[Any]:
        """A page of runs, newest first, for the web UI: the list's filters (``tags``: all of
        them), a time range ``[since, until)``, and a keyset ``before`` = (created_at, id) of
        the last run shown."""
        wanted = check_tags(tags, where="tag")
        if status is not None and status not in S.ALL_STATUSES:
            raise InvalidInput(f"unknown status {status!r}; one of: {', '.join(S.ALL_STATUSES)}")
        if pipeline is not None and (not pipeline or not _serde.storable_text(pipeline)):
            return []
        return await self.store.page_runs(
            status=status,
            pipeline=pipeline,
            roots_only=roots_only,
            since=since,
            until=until,
            before=before,
            limit=limit,
            tags=wanted,
        )

    async def tags_of(self, run_ids: builtins.list[str]) -> dict[str, dict[str, str]]:
        """The tags of these runs, by run id (runs without tags are left out)."""
        return await self.store.tags_of(run_ids)


def _check_resumable(row: Any) -> None:
    if row.status == RunStatus.COMPLETED:
        raise InvalidRunState(
            f"run {row.id} has completed; there is nothing to resume (`durapipe show {row.id}`)"
        )
    if row.status in ("cancelled", "aborted"):
        raise InvalidRunState(
            f"run {row.id} was {row.status}; it cannot be resumed — start a new run"
        )
    if row.status == RunStatus.TIMED_OUT:
        raise InvalidRunState(
            f"run {row.id} timed out; it cannot be resumed — start a new run (with a longer --timeout)"
        )


async def check_failure_retryable(store: Store, row: Any) -> None:
    """Resuming a failed run retries the call whose failure failed it — only if that failure was
    the last thing the pipeline did. Refuse (changing nothing) when the pipeline handled it and
    made calls after it: they are recorded, so running the call again could not be replayed."""
    if row.status != "failed":
        return
    from ._engine import last_handled_failure

    found = last_handled_failure(await store.events(row.id))
    if found is None:
        return
    failure, later = found
    raise InvalidRunState(
        f"run {row.id} cannot be resumed: step {failure.label or failure.step} failed, but the "
        f"pipeline handled that failure ({later.label or later.name or later.step} is recorded "
        "after it), so resuming would not retry it; the run stays failed. "
        f"Start a new run instead: durapipe run {row.entrypoint}"
    )


def _check_by(by: str | None) -> str | None:
    """``by=``: who steers a run, a short line of text (it is written to the run's log)."""
    if by is None:
        return None
    if not isinstance(by, str) or not by or len(by) > 200 or not by.isprintable():
        raise InvalidInput("by= is who acts: 1-200 printable characters, e.g. 'ui:10.0.0.7'")
    return by


def _by_event(kind: EventKind, attempt: int, by: str | None) -> dict[str, Any]:
    event = unleased_event(kind, attempt)
    if by is not None:
        event["data"] = _serde.dumps({"by": by})
    return event


async def steer(client: Client, run_id: str, what: str, *, by: str | None = None) -> str:
    """Stop (``stop``/``stop_now``) or cancel a run wherever it is. -> what happened.

    Given a run that continued as new, it acts on the live link of its chain."""
    row = await client._live_row(run_id)
    run_id = row.id
    verb = "cancel" if what == "cancel" else "stop"

    noted = False

    async def note() -> None:
        # Written before the change: a run it wakes is claimed at a new attempt, which fences
        # off log lines of the attempt before.
        nonlocal noted
        if by is not None and not noted:
            noted = True
            await client._note(row, f"{verb.capitalize()} requested by {by}")

    if verb == "cancel" and row.status == RunStatus.QUEUED:
        # Still in its queue's line: none of its code ran, so there is nothing to unwind.
        await note()
        if await cancel_queued(client.store, row, now=client.store_now()):
            return "cancelled"
        row = await client.row(run_id)  # taken off the queue meanwhile: cancel it where it runs
    if verb == "cancel" and row.status in ("failed", "blocked"):
        await note()
        # Its code already unwound (failed) or cannot run (blocked): nothing is left to clean up.
        if await client.store.finish_unleased(
            run_id,
            status="cancelled",
            event=_by_event(EventKind.RUN_CANCELLED, row.attempt, by),
            now=client.store_now(),
            expect=("failed", "blocked"),
        ):
            return "cancelled"
        row = await client.row(run_id)  # resumed meanwhile: cancel it where it runs
    if row.status in S.TERMINAL:
        raise InvalidRunState(
            f"run {run_id} has already ended ({row.status}); there is nothing to {verb}"
        )
    if verb == "stop" and row.status == "stopped":
        raise InvalidRunState(
            f"run {run_id} is already stopped; `durapipe resume {run_id}` continues it"
        )
    if verb == "stop" and row.requested == "cancel":
        raise InvalidRunState(f"run {run_id} is being cancelled; it cannot be stopped now")
    await note()
    now = client.store_now()
    held = row.lease_owner is not None and (row.lease_expires_at or 0) >= now
    if held:
        await client.store.set_request(run_id, what, now=now)
        return "requested"
    if verb == "stop":
        ok = await client.store.finish_unleased(
            run_id,
            status="stopped",
            event=_by_event(EventKind.RUN_STOPPED, row.attempt, by),
            now=now,
            expect=S.ACTIVE + ("blocked", "failed", RunStatus.QUEUED),
        )
        if not ok:  # it was claimed meanwhile: ask its new holder
            await client.store.set_request(run_id, what, now=now)
            return "requested"
        return "stopped"
    # Cancel of an unleased run: its pipeline must run its finally blocks, so a runner takes it.
    if row.status in RESUMABLE:
        await client.store.make_runnable(run_id, now=now, statuses=RESUMABLE)
    await client.store.set_request(run_id, "cancel", now=now, wake=True)
    return "queued"


def _trace_carrier() -> dict[str, Any]:
    """With tracing on, what links a new run's spans to this process's (durapipe.tracing)."""
    from ._engine import observe

    obs = observe.active()
    if obs is None:
        return {}
    headers = obs.carrier(None, None)
    return {"trace": headers} if headers else {}
