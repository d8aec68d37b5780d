"""durapipe's testing kit: run pipelines in-process, skip time, crash runs, replay histories.

Helpers (all ``async``)::

    view = await run_pipeline(store, my_pipeline, n=3)          # start and run to the end
    assert view.status == "completed"
    view = await crash_run(store, my_pipeline, before="step_completed:charge")  # die mid-step
    view, commits = await record_commits(store, my_pipeline)     # run it; the history writes
    view = await crash_run(store, my_pipeline, after=3)          # die after the 3rd of them
    view = await resume_run(store, my_pipeline, view.run_id)    # continue it, as `durapipe resume`
    await send_input(store, run_id, "approve", True)            # as `durapipe input`
    await stop_run(store, run_id)                               # as `durapipe stop`
    await replay("tests/histories/deploy.json", deploy)         # check code against a history

It is also a pytest plugin (entry point ``pytest11``, name ``durapipe``), loaded wherever durapipe
is installed, with three fixtures:

- ``durapipe_db``: the URL of a fresh, migrated database — a SQLite file in ``tmp_path``, or,
  when ``DURAPIPE_TEST_DATABASE_URL`` names a PostgreSQL server (its user may create databases),
  a new database there, dropped after the test.
- ``durapipe_store``: an open store on ``durapipe_db`` (needs pytest-asyncio).
- ``durapipe_clock``: a :class:`SkippingClock`; durable sleeps finish at once and move its time.

Without the installed entry point (a checkout on PYTHONPATH), load it with ``-p durapipe.testing``
or ``pytest_plugins = ["durapipe.testing"]`` in the top conftest.py. (PYTEST_DONT_REWRITE: this
module has no bare asserts, and may be imported before pytest registers it.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import _serde
from ._client import Client, RunView, check_failure_retryable
from ._clock import SYSTEM_CLOCK, Clock, SkippingClock, SystemClock
from ._definition import PipelineDef
from ._execution import Outcome, Result
from ._execution import replay as execute_dry
from ._local import drive_tree, local_runner, take
from ._runner import Runner
from ._store import Store, create_database, drop_database, open_store
from ._store import schema as S
from ._store.store import Op
from .errors import LeaseLost, RunNotFound

__all__ = [
    "ReplayResult",
    "SkippingClock",
    "crash_run",
    "record_commits",
    "replay",
    "replay_run",
    "resume_run",
    "run_pipeline",
    "send_input",
    "stop_run",
    "wait_for_status",
]

TEST_DATABASE_ENV = "DURAPIPE_TEST_DATABASE_URL"


# ---------------------------------------------------------------------- running

# The lease of the kit's runners under a clock that skips time (a thousand years): leases are
# measured on the runner's clock, so a skipped sleep would expire the run's lease at once, and
# the kit's own runner — which claims the runs of the tree it executes — would take the run
# away from itself in the middle (a second execution; the first one's writes refused).
_SKIPPING_LEASE = 1000 * 365 * 86400.0


def _lease(clock: Clock, lease_ttl: float | None) -> float | None:
    return (
        _SKIPPING_LEASE if lease_ttl is None and not isinstance(clock, SystemClock) else lease_ttl
    )


async def run_pipeline(
    store: Store,
    pipeline: PipelineDef,
    /,
    *,
    run_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    pin: bool | None = None,
    **inputs: Any,
) -> RunView:
    """Start ``pipeline`` and execute it (and its children) here until it ends or stops.

    A run that continues as new is followed: the view is that of its chain's last run."""
    client = Client(store)
    runner = local_runner(store, [pipeline], clock=clock, lease_ttl=_lease(clock, None))
    await runner.start()
    try:
        row, _ = await client.create_run(
            pipeline, inputs, run_id=run_id, pin=pin, owner=runner.id, ttl=runner.lease_ttl
        )
        await drive_tree(runner, row)
    finally:
        await runner.close()
    return await client.get((await client._live_row(row.id)).id)


async def resume_run(
    store: Store, pipeline: PipelineDef, run_id: str, *, clock: Clock = SYSTEM_CLOCK
) -> RunView:
    """Continue a stopped, failed, blocked or abandoned run here with the given definition.

    As ``durapipe resume``, a failed run is refused (:class:`durapipe.InvalidRunState`, nothing
    changed) when the pipeline had caught its failure and made calls after it.

    A run left by :func:`crash_run` (or by a process that died) is taken at once, without
    waiting for its lease to expire, and so are the runs of its tree the same process held
    (a child it was executing).
    """
    client = Client(store)
    row = await client.row(run_id)
    await check_failure_retryable(store, row)  # as `durapipe resume`: a handled failure stays
    runner = local_runner(store, [pipeline], clock=clock, lease_ttl=_lease(clock, None))
    await runner.start()
    try:
        # As `durapipe resume`: a run (and the runs of its tree) held by a process that is gone
        # is taken at once.
        taken = await take(runner, row)
        if taken is None:
            raise AssertionError(f"run {run_id} could not be taken (status {row.status})")
        await drive_tree(runner, taken, resumed=row.status)
    finally:
        await runner.close()
    return await client.get((await client._live_row(run_id)).id)


# ---------------------------------------------------------------------- steering


async def send_input(store: Store, run_id: str, name: str, value: Any) -> None:
    """Send ``value`` (anything JSON) as input ``name`` to a run, as ``durapipe input`` does.

    The run may be waiting for it now or ask for it later; a run driven by :func:`run_pipeline`
    in another task picks it up at its next poll.
    """
    row = await store.get_run(run_id)
    if row is None:
        raise RunNotFound(run_id)
    if row.status in S.TERMINAL:
        raise AssertionError(f"run {run_id} has ended ({row.status}); it takes no more input")
    text = _serde.dumps(value, what=f"input {name!r}")
    await store.send_input(run_id, name, text, now=time.time())


async def stop_run(store: Store, run_id: str, *, now: bool = False) -> str:
    """Stop a run as ``durapipe stop`` does. -> ``"stopped"`` or ``"requested"``.

    A run nobody holds is stopped at once; a run being executed (by :func:`run_pipeline` in
    another task, or a worker) stops at its next journaled call. ``now=True`` also kills a
    running command, which then runs again on resume.
    """
    return await Client(store).stop(run_id, now=now)


async def wait_for_status(
    store: Store, run_id: str, *statuses: str, timeout: float = 10.0
) -> RunView:
    """Poll (in real time) until the run has one of ``statuses``; AssertionError on timeout."""
    client = Client(store)
    deadline = time.monotonic() + timeout
    while True:
        row = await store.get_run(run_id)
        if row is not None and row.status in statuses:
            return await client.get(run_id)
        if time.monotonic() > deadline:
            now = row.status if row is not None else "not created"
            raise AssertionError(
                f"run {run_id} did not become {' or '.join(statuses)} within {timeout:g}s (it is {now})"
            )
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- crashing

EventMatch = str | int | Callable[[dict[str, Any]], bool]


def _matcher(spec: EventMatch | None) -> Callable[[dict[str, Any]], bool] | None:
    if spec is None or callable(spec) or isinstance(spec, int):
        return None
    kind, _, name = spec.partition(":")

    def match(ev: dict[str, Any]) -> bool:
        return ev["kind"] == kind and (not name or name in (ev["name"], ev["label"]))

    return match


def _commit_number(spec: EventMatch | None, which: str) -> int | None:
    if isinstance(spec, bool):
        raise TypeError(f"crash_run({which}={spec}): give an event or a write number, not a bool")
    if not isinstance(spec, int):
        return None
    if spec < 1:
        raise ValueError(
            f"crash_run({which}={spec}): history writes are counted from 1 (the first commit)"
        )
    return spec


def _event_view(ev: Mapping[str, Any]) -> dict[str, Any]:
    """An event about to be written, shaped as in ``durapipe show --json``."""
    out = {k: ev.get(k) for k in ("seq", "kind", "step", "name", "label", "at", "attempt")}
    out["run_id"] = ev.get("run_id")
    try:
        out["data"] = _serde.loads(ev["data"]) if ev.get("data") is not None else None
    except ValueError:
        out["data"] = ev.get("data")
    return out


async def _dropped() -> str:
    return "lost"


class _Tripwire:
    """The journal of a process that dies at a chosen point: after it, nothing is written.

    It also numbers the history writes (journal commits) of the process, 1, 2, 3... in the
    order the runs make them, and keeps the events each committed.
    """

    def __init__(
        self,
        journal: Any,
        runner: Runner,
        after: EventMatch | None = None,
        before: EventMatch | None = None,
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._after = after if callable(after) else _matcher(after)
        self._before = before if callable(before) else _matcher(before)
        self._after_n = _commit_number(after, "after")
        self._before_n = _commit_number(before, "before")
        self.tripped = False
        self.submitted = 0  # history writes asked for (the one refused by a crash included)
        self.commits: list[list[dict[str, Any]]] = []  # the events of each committed write

        self._spawn = runner.spawn
        runner.spawn = self._spawn_unless_dead  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    def _spawn_unless_dead(self, row: Any, **kw: Any) -> asyncio.Task[str]:
        """A dead process starts nothing: a run claimed in the instant of the crash stays as a
        process that died right after its claim leaves it (leased; resume_run takes it)."""
        if self.tripped:
            return asyncio.ensure_future(_dropped())
        return self._spawn(row, **kw)

    async def submit(self, op: Op) -> None:
        if self.tripped:
            raise LeaseLost("durapipe.testing: the process has crashed")
        self.submitted += 1
        n = self.submitted
        events = [_event_view(e) for e in op.events]
        if n == self._before_n or (
            self._before is not None and any(self._before(e) for e in events)
        ):
            self._trip()
            raise LeaseLost("durapipe.testing: crashed before this write")
        await self._journal.submit(op)
        self.commits.append(events)
        if n == self._after_n or (self._after is not None and any(self._after(e) for e in events)):
            self._trip()
            raise LeaseLost("durapipe.testing: crashed after this write")

    async def transaction(self, **kw: Any) -> str:
        """A @dp.transaction step's one write: its statements and its completion. Crashing
        before it commits neither (the body may have run, as a killed process's would)."""
        if self.tripped:
            raise LeaseLost("durapipe.testing: the process has crashed")
        self.submitted += 1
        n = self.submitted
        events = [_event_view({**kw["event"], "data": None})]
        if n == self._before_n or (
            self._before is not None and any(self._before(e) for e in events)
        ):
            kw["body"] = _crash_after(kw["body"], kw["is_async"])
            try:
                await self._journal.transaction(**kw)
            finally:  # on the loop's thread (a sync body runs in SQLite's writer thread)
                self._trip()
            raise AssertionError("unreachable: the crash rolls the transaction back")
        data = str(await self._journal.transaction(**kw))
        self.commits.append(events)
        if n == self._after_n or (self._after is not None and any(self._after(e) for e in events)):
            self._trip()
            raise LeaseLost("durapipe.testing: crashed after this write")
        return data

    def _trip(self) -> None:
        """Drop every run this process holds, writing nothing, as if it had been SIGKILLed."""
        self.tripped = True
        # A dead process claims nothing more: without this, its runner could still take (and
        # start executing) a child run made just before the crash.
        self._runner.stop_claiming()
        me = asyncio.current_task()
        for ctx in list(self._runner.held.values()):
            ctx.interrupt("lost")  # also kills running commands' process groups
            if ctx.task is not None and ctx.task is not me:
                ctx.task.cancel("durapipe.testing: crash")


def _crash_after(body: Any, is_async: bool) -> Any:
    """``body`` followed by a crash: its statements ran, and the transaction is rolled back."""

    def crash() -> None:
        raise LeaseLost("durapipe.testing: crashed before this write")

    if is_async:

        async def abody(conn: Any) -> str:
            await body(conn)
            crash()
            return ""

        return abody

    def sbody(conn: Any) -> str:
        body(conn)
        crash()
        return ""

    return sbody


async def _run_wired(
    store: Store,
    pipeline: PipelineDef,
    inputs: dict[str, Any],
    *,
    after: EventMatch | None,
    before: EventMatch | None,
    run_id: str | None,
    clock: Clock,
    pin: bool | None,
    lease_ttl: float | None,
) -> tuple[RunView, _Tripwire]:
    """Start ``pipeline`` here with its history writes going through a :class:`_Tripwire`."""
    client = Client(store)
    runner = local_runner(store, [pipeline], clock=clock, lease_ttl=_lease(clock, lease_ttl))
    wire = _Tripwire(store.journal, runner, after, before)
    runner.journal = wire  # type: ignore[assignment]
    await runner.start()
    try:
        row, _ = await client.create_run(
            pipeline, inputs, run_id=run_id, pin=pin, owner=runner.id, ttl=runner.lease_ttl
        )
        await drive_tree(runner, row)
    finally:
        await runner.close()
    return await client.get(row.id), wire


async def crash_run(
    store: Store,
    pipeline: PipelineDef,
    /,
    *,
    after: EventMatch | None = None,
    before: EventMatch | None = None,
    run_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    pin: bool | None = None,
    lease_ttl: float | None = None,
    inputs: dict[str, Any] | None = None,
    **kw_inputs: Any,
) -> RunView:
    """Start ``pipeline`` here and let its process "die" at a chosen write to its history.

    ``after=`` crashes right after an event is committed; ``before=`` right before (so what the
    call did is not recorded: a step's body ran, its completion is lost, and it runs again on
    resume). Give an event kind, ``"kind:name"`` (name or label, e.g.
    ``"step_completed:charge"``, ``"step_started:exec"``, ``"timer_started"``), or a predicate
    on the event as ``durapipe show --json`` shows it (plus ``run_id``, so children count too).
    Or give a number N: the N-th history write (journal commit) of this process, counting from
    1 across the run and its children — one write may carry several events (a child's start is
    one write of two). :func:`record_commits` tells how many writes a whole run makes.

    Nothing more is written and no run is claimed: the run keeps its status and its lease
    (``lease_ttl`` seconds, by default ``DURAPIPE_LEASE_TTL`` or 30 — with a clock that skips
    time, practically forever) as a killed process leaves them; running commands are killed.
    Unlike a real SIGKILL, the pipeline's ``finally`` blocks do run (any journaled call in them
    is refused) and a sync step already running in a thread runs to its end.
    Continue with :func:`resume_run` (takes the run, and its children this process held, at
    once) or a worker (after the lease expires). Raises AssertionError if the run ends without
    reaching the crash point.
    """
    if (after is None) == (before is None):
        raise TypeError("crash_run needs exactly one of after= or before=")
    view, wire = await _run_wired(
        store,
        pipeline,
        {**(inputs or {}), **kw_inputs},
        after=after,
        before=before,
        run_id=run_id,
        clock=clock,
        pin=pin,
        lease_ttl=lease_ttl,
    )
    if not wire.tripped:
        raise AssertionError(
            f"run {view.run_id} ended {view.status} after {len(wire.commits)} history writes "
            f"without reaching the crash point "
            f"({'after' if after is not None else 'before'}={after if after is not None else before!r})"
        )
    return view


async def record_commits(
    store: Store,
    pipeline: PipelineDef,
    /,
    *,
    run_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    pin: bool | None = None,
    inputs: dict[str, Any] | None = None,
    **kw_inputs: Any,
) -> tuple[RunView, list[list[dict[str, Any]]]]:
    """Run ``pipeline`` like :func:`run_pipeline` and list its history writes, in order.

    -> ``(view, commits)``: ``commits[k - 1]`` holds the events that the k-th write (journal
    commit) of the run and its children committed, shaped as in ``durapipe show --json`` plus
    ``run_id`` — the boundaries ``crash_run(before=k)`` and ``crash_run(after=k)`` crash at.
    """
    view, wire = await _run_wired(
        store,
        pipeline,
        {**(inputs or {}), **kw_inputs},
        after=None,
        before=None,
        run_id=run_id,
        clock=clock,
        pin=pin,
        lease_ttl=None,
    )
    return view, wire.commits


# ---------------------------------------------------------------------- replay


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """What a replay of recorded history against the current code found (all of it matched)."""

    run_id: str
    replayed: int  # recorded calls the code made again
    completed: bool  # the code returned within the history
    output: Any  # what it returned then (None otherwise)
    frontier: str | None  # else: the step key where the run would continue live
    raised: str | None  # or: "Type: message" when the code raised after replaying everything


def _load_history(history: Any) -> dict[str, Any]:
    if isinstance(history, str | os.PathLike):
        history = json.loads(Path(history).read_text(encoding="utf-8"))
    if isinstance(history, list):
        history = {"events": history}
    if not isinstance(history, dict) or not isinstance(history.get("events"), list):
        raise ValueError(
            "a history is the JSON of `durapipe show RUN_ID --json` (an object with an 'events' "
            "list), that list itself, or the path of a file holding either"
        )
    return history


def _when(at: Any) -> float:
    """An event's time from a history: ISO 8601 (``show --json``) or epoch seconds (older exports)."""
    if isinstance(at, str):
        import datetime as dt

        try:
            return dt.datetime.fromisoformat(at).timestamp()
        except ValueError:
            pass
    return float(at or 0.0)


def _history_rows(doc: dict[str, Any], pdef: PipelineDef) -> tuple[Any, list[Any]]:
    events = sorted(doc["events"], key=lambda e: e["seq"])
    started = next((e for e in events if e["kind"] == "run_started"), None)
    sdata = (started or {}).get("data") or {}
    run_id = doc.get("run_id") or "run_replayed"
    inputs = doc["inputs"] if "inputs" in doc else sdata.get("inputs", {})
    row = SimpleNamespace(
        id=run_id,
        pipeline=doc.get("pipeline") or (started or {}).get("name") or pdef.name,
        version=str(doc.get("version") or sdata.get("version") or pdef.version),
        pinned=bool(doc.get("pinned", sdata.get("pinned", False))),
        inputs=_serde.dumps(inputs or {}),
        root_run_id=doc.get("root_run_id") or run_id,
        parent_run_id=doc.get("parent_run_id"),
        depth=0,
        prefix=doc.get("pipeline") or pdef.name,
        attempt=int(doc.get("attempt") or 1),
        status=doc.get("status", "running"),
    )
    rows = []
    for e in events:
        data = e.get("data")
        rows.append(
            SimpleNamespace(
                run_id=run_id,
                seq=int(e["seq"]),
                kind=e["kind"],
                step=e.get("step"),
                name=e.get("name"),
                label=e.get("label"),
                at=_when(e.get("at")),
                attempt=int(e.get("attempt") or 0),
                data=None if data is None else _serde.dumps(data),
            )
        )
    return row, rows


async def replay(history: Any, pipeline: PipelineDef) -> ReplayResult:
    """Check ``pipeline``'s current code against a recorded history, with no side effects.

    ``history`` is what ``durapipe show RUN_ID --json`` prints (a dict, or the path of a file
    holding it), or just its ``events`` list. The code is run with every recorded call answered
    from the history — nothing is executed, no database is needed — up to the first call the
    history has no result for. Raises :class:`durapipe.NonDeterminismError` where the code makes
    a different call than the one recorded (or returns before making all of them), and
    :class:`durapipe.VersionMismatch` for a pinned run of another version: what ``durapipe
    resume`` would hit with this code.
    """
    doc = _load_history(history)
    row, events = _history_rows(doc, pipeline)
    if row.pipeline != pipeline.name:
        raise ValueError(
            f"the history is of pipeline {row.pipeline!r}, not {pipeline.name!r}: a worker "
            f"would not run it with this code"
        )
    return _replay_result(row.id, await execute_dry(row, events, pipeline, owner="replay"))


async def replay_run(store: Store, run_id: str, pipeline: PipelineDef) -> ReplayResult:
    """:func:`replay` for a run in a database: check ``pipeline``'s current code against the
    history of run ``run_id`` as it is stored now, with no side effects (the run is not
    touched). Raises as :func:`replay` does, and :class:`durapipe.RunNotFound` for no such run.
    """
    row = await Client(store).row(run_id)
    if row.pipeline != pipeline.name:
        raise ValueError(
            f"run {run_id} is of pipeline {row.pipeline!r}, not {pipeline.name!r}: a worker "
            f"would not run it with this code"
        )
    history = await store.events(run_id)
    return _replay_result(row.id, await execute_dry(row, history, pipeline, owner="replay"))


def _replay_result(run_id: str, result: Result) -> ReplayResult:
    """What a dry execution found, as the kit reports it: a mismatch raises."""
    if result.outcome in (Outcome.BLOCKED, Outcome.ABORTED):
        assert result.error is not None
        raise result.error
    if result.outcome is Outcome.FRONTIER:
        return ReplayResult(
            run_id=run_id,
            replayed=result.replayed,
            completed=False,
            output=None,
            frontier=result.frontier,
            raised=None,
        )
    if result.outcome is Outcome.FAILED:
        if result.missed is not None:  # it raised before making every recorded call
            raise result.missed
        exc = result.error
        return ReplayResult(
            run_id=run_id,
            replayed=result.replayed,
            completed=True,
            output=None,
            frontier=None,
            raised=f"{type(exc).__name__}: {exc}",
        )
    return ReplayResult(
        run_id=run_id,
        replayed=result.replayed,
        completed=True,
        output=result.output,
        frontier=None,
        raised=None,
    )


# ---------------------------------------------------------------------- pytest plugin


def _in_thread(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to the end on a loop of its own, leaving the caller's loop alone."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


async def _migrate(url: str) -> None:
    store = await open_store(url, migrate=True)
    await store.close()


def _pg_database(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


def _temporary_database(tmp_path: Path) -> Iterator[str]:
    server = os.environ.get(TEST_DATABASE_ENV)
    if not server:
        url = f"sqlite:///{tmp_path / 'durapipe.db'}"
        _in_thread(lambda: _migrate(url))
        yield url
        return
    if urlsplit(server).scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(
            f"{TEST_DATABASE_ENV}={server!r}: give a PostgreSQL server URL whose user may create "
            "databases (postgresql://user@host:port/postgres); unset it for SQLite"
        )
    plain = urlunsplit(urlsplit(server)._replace(scheme="postgresql"))
    name = "durapipe_test_" + uuid.uuid4().hex[:12]
    _in_thread(lambda: create_database(plain, name))
    try:
        url = _pg_database(plain, name)
        _in_thread(lambda: _migrate(url))
        yield url
    finally:
        _in_thread(lambda: drop_database(plain, name))


try:  # the plugin part: only when pytest is there (the helpers above work without it)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def durapipe_db(tmp_path: Path) -> Iterator[str]:
        """The URL of a fresh, migrated database for this test.

        A SQLite file in ``tmp_path``; with ``DURAPIPE_TEST_DATABASE_URL`` set to a PostgreSQL
        server URL, a new database on that server, dropped after the test.
        """
        yield from _temporary_database(tmp_path)

    @pytest.fixture
    def durapipe_clock() -> SkippingClock:
        """A clock whose sleeps return at once and move its time forward: pass it as ``clock=``."""
        return SkippingClock()

    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover
        pytest_asyncio = None  # type: ignore[assignment]

    if pytest_asyncio is not None:

        @pytest_asyncio.fixture
        async def durapipe_store(durapipe_db: str) -> AsyncIterator[Store]:
            """An open store on ``durapipe_db``, closed after the test."""
            store = await open_store(durapipe_db)
            try:
                yield store
            finally:
                await store.close()

    else:  # pragma: no cover

        @pytest.fixture(name="durapipe_store")
        def _durapipe_store_needs_pytest_asyncio(durapipe_db: str) -> Any:
            """An open store on ``durapipe_db`` (needs pytest-asyncio)."""
            pytest.fail(
                "the durapipe_store fixture needs pytest-asyncio: pip install pytest-asyncio"
            )
