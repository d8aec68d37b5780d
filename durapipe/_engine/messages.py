"""``dp.send`` and ``dp.recv``: messages between runs, and from programs to runs.

A message is a row addressed to a run and a topic, kept until that run takes it. ``dp.send``
writes its ``message_sent`` event and the message row in one transaction (a replay returns at
once: sent exactly once). ``dp.recv`` takes the oldest message of its topic and records it in a
``recv_received`` event in the transaction that marks the message taken, so a replay returns
the same message and a crash never takes one twice.
"""

from __future__ import annotations

import re
from typing import Any

from .. import _serde
from .._kinds import ENDED, EventKind, Family, RunStatus
from ..errors import InvalidRunState, MessageTimeout, RunNotFound
from .context import current
from .first import Taken, raceable
from .journaled import Call, begin

MISSING: Any = object()
# Topics and published keys: short identifiers, as they appear in commands and `show`.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")
NAME_RULE = (
    "1-100 characters of letters, digits, '_', '-', '.' or ':' (not starting with '-', '.' or ':')"
)


def valid_name(name: object) -> bool:
    """Whether ``name`` is a topic or key: a short identifier (:data:`NAME_RULE`)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_name(what: str, name: object) -> str:
    """``name`` if it is a valid topic/key, else ValueError saying what one is."""
    if not valid_name(name):
        raise ValueError(f"{what} {name!r} is not a short identifier: use {NAME_RULE}")
    return str(name)


async def send(run_id: str, topic: str, value: Any = None) -> None:
    """Send ``value`` to run ``run_id`` on ``topic``; it takes it with ``dp.recv(topic)``.

    Journaled: the message is sent exactly once, however often the pipeline is replayed or
    resumed (the message and the record of its send are one write). Messages to a run are
    kept until it takes them, in the order they were sent.

    Args:
        run_id: the addressee (a run that has not ended; it may be this run).
        topic: a short identifier (letters, digits, ``_ - . :``; at most 100 characters).
        value: any JSON value (at most 1 MB encoded).

    Raises:
        RunNotFound: there is no run ``run_id`` (recorded: a replay raises it again).
        InvalidRunState: the run has ended (recorded likewise).
        ValueError: ``topic`` is not a short identifier.
        SerializationError: ``value`` is not JSON or is too large.
        NotInPipeline: called outside a running pipeline.
    """
    check_name("the topic", topic)
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"dp.send needs a run id (a string), got {run_id!r}")
    text = _serde.dumps(value, what=f"message {topic!r}")
    ctx, branch = current("send")
    call = begin(ctx, branch, Family.MESSAGE, topic, f"send_{topic}")
    if call.done is not None:
        data = _serde.loads(call.done.data) or {}
        if data.get("error"):
            raise call.failure(_undeliverable(run_id, data.get("status")))
        return
    status = await ctx.host.run_status(run_id)
    if status is None or status in ENDED:
        await call.record(EventKind.MESSAGE_SENT, {"to": run_id, "error": True, "status": status})
        raise call.failure(_undeliverable(run_id, status))
    now = ctx.clock.now()
    ev = call.event(EventKind.MESSAGE_SENT, _serde.dumps({"to": run_id}))
    row = {"run_id": run_id, "topic": topic, "value": text, "sender": ctx.run_id, "created_at": now}
    await ctx.write(ev, messages=[row])
    call.emit("info", f"Sent '{topic}' to {run_id}")


def _undeliverable(run_id: str, status: str | None) -> Exception:
    if status is None:
        return RunNotFound(run_id)
    return InvalidRunState(f"run {run_id} has ended ({status}); it takes no more messages")


# How many taken message ids an execution remembers: a branch's read of the oldest message only
# has to see the takes committed while it ran (remembering every one would grow the query).
TAKING_KEPT = 256


def mark_taking(ctx: Any, message_id: int) -> None:
    """Mark a message as being taken by this execution (see :func:`next_message`)."""
    ctx.taking.add(message_id)
    if len(ctx.taking) > TAKING_KEPT:
        ctx.taking.discard(min(ctx.taking))  # ids grow: the oldest take, long committed


async def next_message(ctx: Any, topic: str) -> tuple[int, Any, float] | None:
    """The oldest message of ``topic`` for the run that no branch of this execution is taking.

    Two branches of a ``dp.gather`` may look at once and both find the same message before
    either marks it (``ctx.taking``): the one that finds it already marked looks again.
    """
    while True:
        found = await ctx.host.fetch_message(ctx.run_id, topic, set(ctx.taking))
        if found is None or found[0] not in ctx.taking:
            return found  # type: ignore[no-any-return]


class _RecvWait:
    """``dp.recv`` as a wait :func:`dp.first <durapipe._engine.first.first>` races."""

    def __init__(self, topic: str, timeout: float | None, default: Any) -> None:
        self.topic = check_name("the topic", topic)
        self.what = f"recv {topic}"
        self.seconds = _timeout(timeout)
        self.wake: tuple[str, str] | None = ("message", topic)
        self.default = default

    async def poll(self, ctx: Any) -> Taken | None:
        found = await next_message(ctx, self.topic)
        if found is None:
            return None
        mid, value, at = found
        return Taken(value=value, record=value, at=at, consume={"consume_message": mid})

    def at_deadline(self) -> Any:
        if self.default is not MISSING:
            return self.default
        raise MessageTimeout(self.topic, float(self.seconds or 0))

    def restore(self, record: Any) -> Any:
        return record


def _timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    t = float(timeout)
    if t < 0 or t != t:
        raise ValueError(f"a timeout is 0 or more seconds, got {timeout!r}")
    return t


def _replay(call: Call, topic: str, default: Any) -> Any:
    data = _serde.loads(call.done.data) or {}
    if call.done.kind == EventKind.RECV_TIMEOUT:
        if default is not MISSING:
            return default
        raise MessageTimeout(topic, float(data.get("timeout") or 0))
    return data.get("value")


@raceable(lambda a: _RecvWait(a["topic"], a["timeout"], a["default"]))
async def recv(topic: str, *, timeout: float | None = None, default: Any = MISSING) -> Any:
    """Take the next message of ``topic`` sent to this run, waiting for one if none is queued.

    Messages come from ``dp.send`` in another run, ``Client.send()`` or ``durapipe send RUN
    TOPIC VALUE``; those sent before the pipeline asks are kept, and each ``recv`` takes the
    oldest one left. Taking it is recorded with it (a replay returns the same message; a
    message is never taken twice). While it waits the run is ``waiting``; a worker parks a long
    wait in the database and a message arriving wakes it. Pass it unawaited to ``dp.first`` to
    wait for a message or something else.

    Args:
        topic: a short identifier (letters, digits, ``_ - . :``; at most 100 characters).
        timeout: seconds to wait (durable: a resumed run waits only what is left); None: forever.
        default: returned on timeout instead of raising.

    Returns:
        The message's JSON value.

    Raises:
        MessageTimeout: the timeout passed without a message and no ``default`` was given.
        ValueError: ``topic`` is not a short identifier, or ``timeout`` is negative.
        NotInPipeline: called outside a running pipeline.
    """
    check_name("the topic", topic)
    seconds = _timeout(timeout)
    ctx, branch = current("recv")
    call = begin(ctx, branch, Family.RECV, topic, f"recv_{topic}", numbered=False)
    if call.done is not None:
        return _replay(call, topic, default)
    got: list[tuple[int, Any, float]] = []

    async def ready() -> bool:
        found = await next_message(ctx, topic)
        if found is not None:
            mark_taking(ctx, found[0])  # no other branch of this run takes it meanwhile
            got.append(found)
            return True
        return False

    started = call.first(EventKind.RECV_STARTED)
    now = ctx.clock.now()
    back: dict[str, Any] | None = None
    if started is not None:
        deadline = (_serde.loads(started.data) or {}).get("deadline")
    elif await ctx._ready(ready):
        deadline = None  # queued already: taken at once, one write
    else:
        deadline = now + seconds if seconds is not None else None
        call.emit(
            "info",
            f"Waiting for a message on '{topic}' — send one with: "
            f"durapipe send {ctx.run_id} {topic} VALUE",
        )
        await call.record(
            EventKind.RECV_STARTED,
            {"timeout": seconds, "deadline": deadline},
            run_update={
                "status": RunStatus.WAITING,
                "updated_at": now,
                "waiting_for": _serde.dumps({"message": topic, "deadline": deadline}),
            },
        )
    if not got:
        arrived = await ctx.wait(
            call.key,
            deadline=deadline,
            ready=ready,
            status=RunStatus.WAITING,
            waiting_for={"message": topic, "deadline": deadline},
            wake_if=[("message", topic)],
        )
        back = ctx.after_wait()
        if not arrived:
            call.emit(
                "warn",
                f"No message on '{topic}' within {seconds or 0:g}s"
                + (": using the default" if default is not MISSING else ""),
            )
            await call.record(EventKind.RECV_TIMEOUT, {"timeout": seconds}, run_update=back)
            if default is not MISSING:
                return default
            raise MessageTimeout(topic, float(seconds or 0))
    mid, value, _at = got[-1]
    ev = call.event(
        EventKind.RECV_RECEIVED,
        # The value was within the limit when it was sent; the wrapper must not push it over.
        _serde.dumps({"value": value, "message_id": mid}, limit=_serde.MAX_VALUE_BYTES + 100),
    )
    extra: dict[str, Any] = {} if back is None else {"run_update": back}
    await ctx.write(ev, consume_message=mid, consume_seq=ev["seq"], **extra)
    return value
