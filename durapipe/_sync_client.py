"""SyncClient: the Client's methods for synchronous code (Flask, Django, scripts)."""

from __future__ import annotations

import builtins
import functools
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from typing_extensions import ParamSpec, TypeVar

from ._client import Client, RunView
from ._client_schedules import ScheduleView
from ._definition import PipelineDef
from ._queues import Queue, QueueView
from ._schedules import Cron, Every

P = ParamSpec("P")
T = TypeVar("T")


class SyncClient:
    """Start, inspect and steer runs from synchronous code: :class:`Client`, without ``await``.

    ::

        with dp.SyncClient("postgresql://app@db/app") as client:
            run_id = client.start(deploy, branch="main")
            print(client.result(run_id, timeout=600))

    It has the same methods as :class:`Client`, with the same arguments and results. They run
    an async client on an event loop of its own in a background thread, so a SyncClient works
    in any thread, including several at once (a threaded web server can share one), and also
    where an event loop is already running. Close it (or use ``with``) to stop that thread and
    close the database connections.

    Args:
        url: ``sqlite:///path.db`` or ``postgresql://user:password@host:port/dbname``;
            default ``DURAPIPE_DATABASE_URL``, else ``./durapipe.db``.
        migrate: as for :meth:`Client.connect`.

    Raises:
        ConfigError: the URL is unusable, or the database is not migrated.
        DatabaseUnavailable: the database cannot be reached.
    """

    def __init__(self, url: str | None = None, *, migrate: bool | None = None) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._client: Client = self._portal.call(
                functools.partial(Client.connect, url, migrate=migrate)
            )
        except BaseException as exc:
            self._portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise

    @classmethod
    def connect(cls, url: str | None = None, *, migrate: bool | None = None) -> SyncClient:
        """Open the database at ``url`` and return a client on it (the same as ``SyncClient(url)``)."""
        return cls(url, migrate=migrate)

    def close(self) -> None:
        """Close the client: its database connections and its event loop thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._portal.call(self._client.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("this SyncClient is closed")
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    # The same methods as Client, in the same order; the docstrings are Client's own.

    def start(
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
        return self._call(
            self._client.start,
            pipeline,
            run_id=run_id,
            pin=pin,
            inputs=inputs,
            tags=tags,
            timeout=timeout,
            queue=queue,
            priority=priority,
            key=key,
            **kw_inputs,
        )

    def get(self, run_id: str) -> RunView:
        return self._call(self._client.get, run_id)

    def list(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        roots_only: bool = False,
        limit: int = 200,
        tags: Mapping[str, str] | None = None,
    ) -> builtins.list[RunView]:
        return self._call(
            self._client.list,
            status=status,
            pipeline=pipeline,
            roots_only=roots_only,
            limit=limit,
            tags=tags,
        )

    def events(self, run_id: str) -> builtins.list[dict[str, Any]]:
        return self._call(self._client.events, run_id)

    def result(self, run_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Any:
        return self._call(self._client.result, run_id, timeout=timeout, poll=poll)

    def send_input(self, run_id: str, name: str, value: Any, *, by: str | None = None) -> None:
        return self._call(self._client.send_input, run_id, name, value, by=by)

    def stop(self, run_id: str, *, now: bool = False, by: str | None = None) -> str:
        return self._call(self._client.stop, run_id, now=now, by=by)

    def cancel(self, run_id: str, *, here: bool = True, by: str | None = None) -> str:
        return self._call(self._client.cancel, run_id, here=here, by=by)

    def resume(self, run_id: str, *, by: str | None = None) -> None:
        return self._call(self._client.resume, run_id, by=by)

    # messages, published state
    def set_queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = 1,
        rate: tuple[int, str | float] | None = None,
        priority: bool = False,
    ) -> QueueView:
        return self._call(
            self._client.set_queue,
            name,
            concurrency=concurrency,
            key_concurrency=key_concurrency,
            rate=rate,
            priority=priority,
        )

    def queues(self) -> builtins.list[QueueView]:
        return self._call(self._client.queues)

    def queue_places(self, run_ids: builtins.list[str]) -> dict[str, tuple[str, int]]:
        return self._call(self._client.queue_places, run_ids)

    def send(self, run_id: str, topic: str, value: Any = None, *, by: str | None = None) -> None:
        return self._call(self._client.send, run_id, topic, value, by=by)

    def get_event(
        self, run_id: str, key: str, *, wait: float | None = None, default: Any = None
    ) -> Any:
        return self._call(self._client.get_event, run_id, key, wait=wait, default=default)

    def published(self, run_id: str) -> dict[str, Any]:
        return self._call(self._client.published, run_id)

    def fork(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        inputs: dict[str, Any] | None = None,
        new_run_id: str | None = None,
        by: str | None = None,
    ) -> str:
        return self._call(
            self._client.fork,
            run_id,
            from_step=from_step,
            inputs=inputs,
            new_run_id=new_run_id,
            by=by,
        )

    def edit(
        self,
        run_id: str,
        step: str,
        result: Any,
        *,
        reason: str,
        by: str | None = None,
        rerun_after: bool = True,
    ) -> dict[str, Any]:
        return self._call(
            self._client.edit, run_id, step, result, reason=reason, by=by, rerun_after=rerun_after
        )

    # schedules

    def add_schedule(
        self, name: str, pipeline: PipelineDef | str, schedule: Cron | Every
    ) -> ScheduleView:
        return self._call(self._client.add_schedule, name, pipeline, schedule)

    def get_schedule(self, name: str) -> ScheduleView:
        return self._call(self._client.get_schedule, name)

    def list_schedules(self) -> builtins.list[ScheduleView]:
        return self._call(self._client.list_schedules)

    def pause_schedule(self, name: str) -> None:
        return self._call(self._client.pause_schedule, name)

    def resume_schedule(self, name: str) -> None:
        return self._call(self._client.resume_schedule, name)

    def delete_schedule(self, name: str) -> None:
        return self._call(self._client.delete_schedule, name)

    def trigger_schedule(self, name: str) -> str:
        return self._call(self._client.trigger_schedule, name)


def _sync_doc(doc: str | None) -> str | None:
    return doc.replace("await client.", "client.") if doc else doc


for _name in (
    "start",
    "get",
    "list",
    "events",
    "result",
    "send_input",
    "stop",
    "cancel",
    "resume",
    # messages, published state
    "send",
    "get_event",
    "published",
    # fork and edit
    "fork",
    "edit",
    # schedules
    *("add_schedule", "get_schedule", "list_schedules", "pause_schedule", "resume_schedule"),
    *("delete_schedule", "trigger_schedule"),
    # queues
    "set_queue",
    "queues",
    "queue_places",
):
    getattr(SyncClient, _name).__doc__ = _sync_doc(getattr(Client, _name).__doc__)
del _name
