"""SyncClient: the Client's methods for synchronous code (Flask, Django, scripts)."""

from __future__ import annotations

import builtins
import functools
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from typing_extensions import ParamSpec, TypeVar

from ._client import Client, RunView
from ._definition import PipelineDef
from ._queues import Queue, QueueView

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
    ) -> builtins.list[RunView]:
        return self._call(
            self._client.list, status=status, pipeline=pipeline, roots_only=roots_only, limit=limit
        )

    def events(self, run_id: str) -> builtins.list[dict[str, Any]]:
        return self._call(self._client.events, run_id)

    def result(self, run_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Any:
        return self._call(self._client.result, run_id, timeout=timeout, poll=poll)

    def send_input(self, run_id: str, name: str, value: Any) -> None:
        return self._call(self._client.send_input, run_id, name, value)

    def stop(self, run_id: str, *, now: bool = False) -> str:
        return self._call(self._client.stop, run_id, now=now)

    def cancel(self, run_id: str, *, here: bool = True) -> str:
        return self._call(self._client.cancel, run_id, here=here)

    def resume(self, run_id: str) -> None:
        return self._call(self._client.resume, run_id)

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
) + (
    "set_queue",
    "queues",
    "queue_places",
):
    getattr(SyncClient, _name).__doc__ = _sync_doc(getattr(Client, _name).__doc__)
del _name
