"""The Client's part for messages and published state: send, get_event, published.

Kept apart from ``_client.py`` (its methods there are one-line calls of these).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from . import _serde
from ._kinds import ENDED, TERMINAL
from .errors import InvalidInput, InvalidRunState, RunNotFound

if TYPE_CHECKING:
    from ._client import Client

# While waiting for a key, look again this often even if no change was heard (a missed
# notification during a reconnect costs at most this, not a hang).
_REREAD = 5.0


def check_name(what: str, name: object) -> str:
    from ._engine.messages import NAME_RULE, valid_name  # the rule the pipeline side checks

    if not valid_name(name):
        raise InvalidInput(f"{what} {name!r} is not a short identifier: use {NAME_RULE}")
    return str(name)


async def send(
    client: Client, run_id: str, topic: str, value: Any, *, by: str | None = None
) -> None:
    check_name("the topic", topic)
    text = _serde.dumps(value, what=f"message {topic!r}")
    # RunNotFound for an id no run can have; a run that continued as new: its live link.
    row = await client._live_row(run_id)
    run_id = row.id
    if by is not None and row.status not in ENDED:
        # First, as send_input notes: the message may wake the run, whose next attempt fences
        # its log lines.
        await client._note(row, f"Message '{topic}' sent by {by}")
    mid, status = await client.store.send_message(run_id, topic, text, now=client.store_now())
    if mid is None:
        if status is None:
            raise RunNotFound(run_id)
        raise InvalidRunState(f"run {run_id} has ended ({status}); it takes no more messages")


async def published(client: Client, run_id: str) -> dict[str, Any]:
    await client.row(run_id)
    return {r.key: _serde.loads(r.value) for r in await client.store.published(run_id)}


async def get_event(
    client: Client, run_id: str, key: str, *, wait: float | None, default: Any
) -> Any:
    check_name("the key", key)
    if wait is not None and (wait != wait or wait < 0):
        raise InvalidInput(f"wait is 0 or more seconds, got {wait!r}")
    store = client.store
    await client.row(run_id)

    async def look() -> tuple[bool, Any]:
        rows = await store.published(run_id, key)
        if rows:
            return True, _serde.loads(rows[0].value)
        row = await store.get_run(run_id)
        # A run that ended without publishing the key never will.
        return (row is None or row.status in TERMINAL), default

    found, value = await look()
    if found or not wait:
        return value if found else default
    changed = asyncio.Event()
    closing = asyncio.Event()
    watcher = asyncio.create_task(
        store.watch(lambda _payload: changed.set(), on_listening=changed.set, until=closing)
    )
    deadline = time.monotonic() + wait
    try:
        while True:
            changed.clear()
            done, value = await look()
            if done:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                return default
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(left, _REREAD))
    finally:
        closing.set()
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
