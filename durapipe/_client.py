"""Client: drive runs from a program or the CLI without running them."""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import _serde
from ._definition import PipelineDef, load_target, registered
from ._engine import last_handled_failure
from ._ids import new_id, validate_run_id
from ._store import Store, open_store
from ._store import schema as S
from .errors import (
    ConfigError,
    DurapipeError,
    InvalidInput,
    InvalidRunState,
    RunFailed,
    RunNotFound,
    SerializationError,
)

if TYPE_CHECKING:
    from ._runner import Runner

RESUMABLE = ("stopped", "failed", "blocked")


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run as a program sees it (``Client.get``, ``Client.list``, the testing kit).

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        version: the pipeline version the run started on.
        status: ``pending``, ``running``, ``sleeping``, ``waiting``, ``stopped``, ``blocked``,
            ``completed``, ``failed``, ``cancelled`` or ``aborted``.
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

    @classmethod
    def of(cls, row: Any) -> RunView:
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


class Client:
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
    ) -> tuple[Any, bool]:
        """Insert a run (leased to ``owner`` when given). -> (row, created)."""
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
        rid = run_id or new_id("run")
        now = self.store_now()
        pinned = pdef.pin if pin is None else pin
        row = {
            "id": rid,
            "pipeline": pdef.name,
            "version": pdef.version,
            "entrypoint": pdef.entrypoint,
            "pinned": pinned,
            "status": "running" if owner else "pending",
            "inputs": text,
            "parent_run_id": None,
            "parent_step": None,
            "root_run_id": rid,
            "depth": 0,
            "prefix": pdef.name,
            "created_at": now,
            "updated_at": now,
            "attempt": 1 if owner else 0,
            "lease_owner": owner,
            "lease_expires_at": now + ttl if owner else None,
        }
        started = {
            "run_id": rid,
            "seq": 1,
            "kind": "run_started",
            "step": None,
            "name": pdef.name,
            "label": None,
            "at": now,
            "attempt": row["attempt"],
            "data": _serde.dumps(
                {
                    "inputs": inputs,
                    "version": pdef.version,
                    "entrypoint": pdef.entrypoint,
                    "pinned": pinned,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
            ),
        }
        existing, created = await self.store.create_run(row, [started])
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
            **kw_inputs: the inputs by name.

        Raises:
            ConfigError: an unknown pipeline, inputs that do not fit it, an unusable run id.
        """
        pdef = self.resolve(pipeline)
        row, _ = await self.create_run(
            pdef, {**(inputs or {}), **kw_inputs}, run_id=run_id, pin=pin
        )
        return str(row.id)

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

    async def history(self, run_id: str) -> builtins.list[Any]:
        """The run's history as event rows (``events`` gives them as dicts)."""
        return await self.store.events(run_id)

    async def get(self, run_id: str) -> RunView:
        """The run with this id, as it is now.

        Raises:
            RunNotFound: there is no such run.
        """
        return RunView.of(await self.row(run_id))

    async def list(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        limit: int = 200,
    ) -> builtins.list[RunView]:
        """Runs, newest first, like ``durapipe list``.

        Args:
            status: only runs with this status (``pending``, ``running``, ``sleeping``,
                ``waiting``, ``stopped``, ``blocked``, ``completed``, ``failed``,
                ``cancelled``, ``aborted``).
            pipeline: only runs of the pipeline with this name.
            roots_only: leave out child runs.
            limit: at most this many runs.
        """
        if status is not None and status not in S.ACTIVE + S.RESUMABLE_EXTRA + tuple(S.TERMINAL):
            raise InvalidInput(f"unknown status {status!r}; one of: {', '.join(S.ALL_STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInput(f"limit {limit!r}: give a number of runs, 0 or more")
        limit = min(limit, 2**62)  # more than any database holds; fits SQLite and int8
        if pipeline is not None and (not pipeline or not _serde.storable_text(pipeline)):
            return []  # no pipeline has such a name
        rows = await self.store.list_runs(
            status=status, pipeline=pipeline, roots_only=roots_only, limit=limit
        )
        return [RunView.of(r) for r in rows]

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

        Args:
            run_id: the run.
            timeout: seconds to wait at most (None: until it ends).
            poll: seconds between two looks at the run.

        Raises:
            RunFailed: the run failed, was cancelled or aborted, or is blocked.
            TimeoutError: it did not end within ``timeout``.
            RunNotFound: there is no such run.
        """
        if timeout is not None and math.isnan(timeout):
            raise InvalidInput("timeout nan: give a number of seconds")  # it would never come
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            row = await self.row(run_id)
            if row.status == "completed":
                return _serde.loads(row.output)
            if row.status in S.TERMINAL or row.status == "blocked":
                raise RunFailed(run_id, row.status, _serde.loads(row.error))
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"run {run_id} is still {row.status} after {timeout:g}s")
            await asyncio.sleep(poll)

    # ---------------------------------------------------------------- steering

    async def send_input(self, run_id: str, name: str, value: Any) -> None:
        """Deliver ``value`` for ``dp.await_input(name)`` in the run, like ``durapipe input``.

        The value (any JSON value) is kept until the run asks for it; several values for one
        name are taken in order.

        Raises:
            InvalidRunState: the run has ended.
            RunNotFound: there is no such run.
        """
        row = await self.row(run_id)
        if row.status in ("completed", "cancelled", "aborted"):
            raise InvalidRunState(f"run {run_id} has ended ({row.status}); it takes no more input")
        if not _serde.storable_text(name) or not name or len(name) > 200:
            raise InvalidInput(
                "an input name is 1-200 characters of valid Unicode without NUL bytes"
            )
        text = _serde.dumps(value, what=f"input {name!r}")
        await self.store.send_input(run_id, name, text, now=self.store_now())

    async def stop(self, run_id: str, *, now: bool = False) -> str:
        """Stop a run at its next journaled call, like ``durapipe stop``.

        Args:
            run_id: the run.
            now: also kill a command it is running.

        Returns:
            ``"stopped"`` (nobody held it: it is stopped now) or ``"requested"`` (the process
            running it stops it at its next journaled call).

        Raises:
            InvalidRunState: the run has ended, is already stopped, or is being cancelled.
            RunNotFound: there is no such run.
        """
        return await steer(self, run_id, "stop_now" if now else "stop")

    async def cancel(
        self,
        run_id: str,
        *,
        here: bool = True,
        _runner_for: Callable[[PipelineDef], Runner] | None = None,
    ) -> str:
        """Cancel a run, like ``durapipe cancel``: cancellation is raised at its current await,
        so its ``finally`` blocks run.

        Args:
            run_id: the run.
            here: run the cancellation of a suspended run in this process when its code can
                be loaded here (False: leave it to a worker).

        Returns:
            ``"requested"`` (the process holding it cancels it at its current await),
            ``"cancelled"`` (it was suspended, sleeping or waiting: its cancellation ran, here
            or by a worker that took it first), or ``"queued"`` (its code cannot be loaded
            here, or ``here=False``: a worker that carries its pipeline runs the cancellation).

        Raises:
            InvalidRunState: the run has already ended.
            RunNotFound: there is no such run.
        """
        what = await steer(self, run_id, "cancel")
        if what != "queued" or not here:
            return what
        from ._runner import Runner, dead_lease_holders, drive_tree

        row = await self.row(run_id)
        try:
            pdef = load_target(row.entrypoint)
        except DurapipeError:
            return "queued"
        if _runner_for is not None:  # the CLI's runner prints the cancellation's output
            runner = _runner_for(pdef)
        else:
            runner = Runner(self.store, kind="run", pipelines=[pdef], suspend_after=math.inf)
        await runner.start()
        try:
            runner.dead_owners = await dead_lease_holders(self.store, row.root_run_id)
            taken = await self.store.claim_run(
                run_id,
                owner=runner.id,
                ttl=runner.lease_ttl,
                now=self.store_now(),
                statuses=S.ACTIVE + RESUMABLE,
                dead_owners=runner.dead_owners,
            )
            if taken is None:  # a worker took it meanwhile: it carries out the cancel
                after = await self.row(run_id)
                return str(after.status) if after.status in S.TERMINAL else "requested"
            return await drive_tree(runner, taken, cancel=True)
        finally:
            await runner.close()

    async def resume(self, run_id: str) -> None:
        """Make a stopped, failed or blocked run runnable again for the workers.

        Raises:
            InvalidRunState: the run has completed, or was cancelled or aborted.
            RunNotFound: there is no such run.
        """
        row = await self.row(run_id)
        check_resumable(row)
        await check_failure_retryable(self.store, row)
        if row.status in RESUMABLE:
            await self.store.make_runnable(run_id, now=self.store_now(), statuses=RESUMABLE)


def check_resumable(row: Any) -> None:
    if row.status == "completed":
        raise InvalidRunState(
            f"run {row.id} has completed; there is nothing to resume (`durapipe show {row.id}`)"
        )
    if row.status in ("cancelled", "aborted"):
        raise InvalidRunState(
            f"run {row.id} was {row.status}; it cannot be resumed — start a new run"
        )


async def check_failure_retryable(store: Store, row: Any) -> None:
    """Resuming a failed run retries the call whose failure failed it — only if that failure was
    the last thing the pipeline did. Refuse (changing nothing) when the pipeline handled it and
    made calls after it: they are recorded, so running the call again could not be replayed."""
    if row.status != "failed":
        return
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


async def steer(client: Client, run_id: str, what: str) -> str:
    """Stop (``stop``/``stop_now``) or cancel a run wherever it is. -> what happened."""
    row = await client.row(run_id)
    verb = "cancel" if what == "cancel" else "stop"
    if verb == "cancel" and row.status in ("failed", "blocked"):
        # Its code already unwound (failed) or cannot run (blocked): nothing is left to clean up.
        if await client.store.finish_unleased(
            run_id,
            status="cancelled",
            event={"kind": "run_cancelled", "attempt": row.attempt, "data": None},
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
    now = client.store_now()
    held = row.lease_owner is not None and (row.lease_expires_at or 0) >= now
    if held:
        await client.store.set_request(run_id, what, now=now)
        return "requested"
    if verb == "stop":
        ok = await client.store.finish_unleased(
            run_id,
            status="stopped",
            event={"kind": "run_stopped", "attempt": row.attempt, "data": None},
            now=now,
            expect=S.ACTIVE + ("blocked", "failed"),
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
