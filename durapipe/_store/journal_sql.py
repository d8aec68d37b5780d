"""The journal's hot path: the statements that apply one batch of ops in one transaction.

Every step of every run goes through here, so it skips SQLAlchemy's per-statement machinery:
constant, parameterised statements for sqlite3 / asyncpg. The algorithm is written once, as a
generator of commands; each dialect's module executes them on its raw driver (``sqlite.run``,
``postgres.run``), and has a one-statement path of its own for the common batch (:func:`simple`).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, NamedTuple

from .._kinds import Request
from ..errors import LeaseLost
from . import schema as S
from .journal import Op

EVENT_COLS = ("run_id", "seq", "kind", "step", "name", "label", "at", "attempt", "data")
ROW_COLS = (*EVENT_COLS, "started_at")  # a stored row (see event_rows)
LOG_COLS = ("run_id", "root_run_id", "step", "prefix", "stream", "at", "line", "attempt")
RUN_COLS = frozenset(c.name for c in S.runs.c)
TERMINAL = S.TERMINAL
# Requests a suspended run must not sleep through: the run is made due at once so that a
# worker takes it and stops or cancels it (see ``Op.suspend``).
WAKING_REQUESTS = frozenset({Request.STOP, Request.STOP_NOW, Request.CANCEL})

Cmd = tuple[str, str, Any]  # (fetch | exec | many | notify, sql, args)


class LogLine(NamedTuple):
    """One line of a run's log as read back (``durapipe logs``)."""

    id: int
    run_id: str
    root_run_id: str
    step: str | None
    prefix: str
    stream: str
    at: float
    line: str
    attempt: int


def log_lines(rows: Any) -> list[LogLine]:
    """Stored log rows as lines, in order.

    A row may hold several lines joined by ``\\n``: an exec's output is stored a chunk (one read of
    the pipe) at a time, with the time it arrived. Each line keeps the row's id, so paging by id
    takes or leaves a row whole.
    """
    out: list[LogLine] = []
    for r in rows:
        out.extend(
            LogLine(
                r.id, r.run_id, r.root_run_id, r.step, r.prefix, r.stream, r.at, line, r.attempt
            )
            for line in r.line.split("\n")
        )
    return out


class _Ph:
    """Placeholders: ``?`` for sqlite3, ``$1, $2...`` for asyncpg."""

    def __init__(self, pg: bool) -> None:
        self.pg = pg
        self.n = 0

    def __call__(self) -> str:
        if not self.pg:
            return "?"
        self.n += 1
        return f"${self.n}"

    def reset(self) -> _Ph:
        self.n = 0
        return self


def _cols(names: Any) -> list[str]:
    out = list(names)
    for n in out:
        if n not in RUN_COLS:
            raise ValueError(f"not a column of durapipe_runs: {n}")
    return out


def plan(ops: list[Op], *, pg: bool) -> Generator[Cmd, Any, list[BaseException | None]]:
    """The commands that apply ``ops``; each op is fenced by its lease (owner, attempt)."""
    ph = _Ph(pg)
    results: list[BaseException | None] = [None] * len(ops)
    fenced = sorted({op.run_id for op in ops if op.owner is not None})
    # The addressees of messages are locked too, with the fenced runs and in the same order (no
    # deadlock between batches): as Store.send_message does, so that a run suspending at the
    # same moment either sees the message or is woken by it.
    addressees = {m["run_id"] for op in ops for m in op.messages}
    if addressees:
        fenced = sorted(set(fenced) | addressees)
    current: dict[str, tuple[Any, Any]] = {}
    requested: dict[str, str | None] = {}  # what clients asked of the runs, read under the lock
    if fenced:
        if pg:
            rows = yield (
                "fetch",
                "SELECT id, lease_owner, attempt, requested FROM durapipe_runs WHERE id = ANY($1::varchar[]) FOR UPDATE",
                [fenced],
            )
            for rid, owner, attempt, req in rows:
                current[rid] = (owner, attempt)
                requested[rid] = req
        else:
            for i in range(0, len(fenced), 500):
                part = fenced[i : i + 500]
                sql = f"SELECT id, lease_owner, attempt, requested FROM durapipe_runs WHERE id IN ({','.join('?' * len(part))})"
                for rid, owner, attempt, req in (yield ("fetch", sql, part)):
                    current[rid] = (owner, attempt)
                    requested[rid] = req
    events: list[tuple[Any, ...]] = []
    notify = False
    ok: list[Op] = []
    for i, op in enumerate(ops):
        if op.owner is not None and current.get(op.run_id) != (op.owner, op.attempt):
            results[i] = LeaseLost(f"run {op.run_id}: lease lost")
            continue
        ok.append(op)
        for run in op.new_runs:
            cols = _cols(run)
            ph.reset()
            sql = f"INSERT INTO durapipe_runs ({', '.join(cols)}) VALUES ({', '.join(ph() for _ in cols)})"
            yield ("exec", sql, [run[c] for c in cols])
            notify = True
        events.extend(tuple(ev[c] for c in EVENT_COLS) for ev in op.events)
    if events:
        ph.reset()
        sql = f"INSERT INTO durapipe_events ({', '.join(EVENT_COLS)}) VALUES ({', '.join(ph() for _ in EVENT_COLS)})"
        yield ("many", sql, events)
    # Without waits to check, statements of the same shape go out together (one executemany:
    # one round trip on asyncpg) in three phases: inputs consumed, runs updated, parents woken.
    # A batch with a wait to check runs op by op, so each check sees what came before it.
    # (Also op by op when one run updates its row twice in the batch: order matters there.)
    updated = [op.run_id for op in ok if op.run_update]
    grouped = len(set(updated)) == len(updated) and not any(
        op.wake_if_input is not None or op.wake_if_child is not None or op.wake_if for op in ok
    )
    later: dict[str, list[Any]] = {}
    woken: list[Any] = []
    for op in ok:
        if op.consume_input is not None:
            ph.reset()
            sql = f"UPDATE durapipe_inputs SET consumed_seq = {ph()} WHERE id = {ph()} AND consumed_seq IS NULL"
            if grouped:
                later.setdefault(sql, []).append([op.consume_seq, op.consume_input])
            else:
                yield ("exec", sql, [op.consume_seq, op.consume_input])
        if op.consume_message is not None or op.messages or op.publish:
            notify = (yield from _messages(op, ph)) or notify
        if op.run_update:
            values = dict(op.run_update)
            if (
                op.suspend
                or op.wake_if_input is not None
                or op.wake_if_child is not None
                or op.wake_if
            ):
                # A stop or cancel asked while this process held the run: a worker takes it
                # at once and acts on it (the request stays on the row), not when it is due.
                arrived = requested.get(op.run_id) in WAKING_REQUESTS
                if not arrived and op.wake_if_input is not None:
                    ph.reset()
                    sql = f"SELECT id FROM durapipe_inputs WHERE run_id = {ph()} AND name = {ph()} AND consumed_seq IS NULL LIMIT 1"
                    arrived = bool((yield ("fetch", sql, [op.run_id, op.wake_if_input])))
                if not arrived and op.wake_if_child is not None:
                    ph.reset()
                    # The child, or the live link of its continue-as-new chain.
                    rows = yield (
                        "fetch",
                        f"SELECT status FROM durapipe_runs WHERE (id = {ph()} OR chain_id = {ph()}) "
                        "AND status <> 'continued'",
                        [op.wake_if_child, op.wake_if_child],
                    )
                    arrived = bool(rows) and rows[0][0] in TERMINAL
                for what, name in op.wake_if:
                    if arrived:
                        break
                    ph.reset()
                    sql, args = _arrived(what, name, op.run_id, ph)
                    rows = yield ("fetch", sql, args)
                    arrived = bool(rows) and (what != "child" or rows[0][0] in TERMINAL)
                if arrived:  # what it waits for came meanwhile: stay runnable (no lost wake-up)
                    values["wake_at"] = values.get("updated_at") or time.time()
            cols = _cols(values)
            ph.reset()
            sets = ", ".join(f"{c} = {ph()}" for c in cols)
            sql = f"UPDATE durapipe_runs SET {sets} WHERE id = {ph()}"
            args = [values[c] for c in cols] + [op.run_id]
            if grouped:
                later.setdefault(sql, []).append(args)
            else:
                yield ("exec", sql, args)
            if values.get("lease_owner", "x") is None or values.get("status") in TERMINAL:
                notify = True
        if op.wake_parent:
            at = (op.run_update or {}).get("updated_at") or time.time()
            if grouped:
                woken.append([at, op.wake_parent, at])
            else:
                yield ("exec", _WAKE_PARENT[pg], [at, op.wake_parent, at])
            notify = True
    for sql, rows in later.items():
        yield ("many", sql, rows)
    for op in ok:
        if op.tags or op.copy_tags_to:
            yield from _tag_cmds(op, ph)
    if woken:
        yield ("many", _WAKE_PARENT[pg], woken)
    logs = [row for op in ops for row in op.logs]
    if logs:
        yield ("many", _FENCED_LOGS[pg], [tuple(r[c] for c in LOG_COLS) for r in logs])
    if notify and pg:
        yield ("notify", "run", [])  # the dialect knows its channel
    return results


# Log lines are fenced like events, in the same statement that stores them: a line is kept only
# while its run is still at the attempt that printed it. A worker paused past its lease and woken
# after another took the run over (a new attempt) cannot add its output to the run's logs.
_LOG_CASTS = {"at": "::float8", "line": "::text", "attempt": "::int"}  # the rest: ::varchar


def _fenced_logs(pg: bool) -> str:
    mark = "$" if pg else "?"  # numbered: the run's id and attempt are used twice
    arg = {c: f"{mark}{i}" for i, c in enumerate(LOG_COLS, 1)}
    values = ", ".join(arg[c] + (_LOG_CASTS.get(c, "::varchar") if pg else "") for c in LOG_COLS)
    return (
        f"INSERT INTO durapipe_logs ({', '.join(LOG_COLS)}) SELECT {values} WHERE EXISTS ("
        f"SELECT 1 FROM durapipe_runs WHERE id = {arg['run_id']} AND attempt = {arg['attempt']})"
    )


_FENCED_LOGS = {pg: _fenced_logs(pg) for pg in (False, True)}

# A child's end makes its suspended parent due, unless it is due already: of 10,000 children
# ending, one updates the parent's row and the rest find it due and skip it, instead of each
# taking the row's lock in turn and waiting for the last one's commit (bench/fanout.py: 10,000
# children on PostgreSQL spent 16-32 s of server time queued on that one row).
_WAKE_PARENT = {
    pg: (
        f"UPDATE durapipe_runs SET wake_at = {a} WHERE id = {b} AND status = 'waiting'"
        f" AND (wake_at IS NULL OR wake_at > {c})"
    )
    for pg, (a, b, c) in ((False, ("?", "?", "?")), (True, ("$1", "$2", "$3")))
}


def _tag_cmds(op: Op, ph: _Ph) -> Generator[Cmd, Any, None]:
    """Set the op's tags on its run (a key's new value replaces the old), copy them onward."""
    for key, value in (op.tags or {}).items():
        ph.reset()
        sql = f"DELETE FROM durapipe_tags WHERE run_id = {ph()} AND key = {ph()}"
        yield ("exec", sql, [op.run_id, key])
        ph.reset()
        sql = f"INSERT INTO durapipe_tags (run_id, key, value) VALUES ({ph()}, {ph()}, {ph()})"
        yield ("exec", sql, [op.run_id, key, value])
    if op.copy_tags_to:
        ph.reset()
        cast = "::varchar" if ph.pg else ""
        sql = (
            f"INSERT INTO durapipe_tags (run_id, key, value) SELECT {ph()}{cast}, key, value "
            f"FROM durapipe_tags WHERE run_id = {ph()}"
        )
        yield ("exec", sql, [op.copy_tags_to, op.run_id])


# ---------------------------------------------------------------- a step in one row

_STARTED, _COMPLETED = "step_started", "step_completed"


def event_rows(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows that store ``events`` (ROW_COLS): one per event, except that a step's start
    followed by its completion (the start carries no data: a trivial step's write) is one row,
    the completion with the start's time in ``started_at``. One row instead of two is the
    cheaper insert on the hot path; :func:`expand` gives back both events."""
    rows: list[tuple[Any, ...]] = []
    i, n = 0, len(events)
    while i < n:
        ev = events[i]
        nxt = events[i + 1] if i + 1 < n else None
        if (
            nxt is not None
            and ev["kind"] == _STARTED
            and nxt["kind"] == _COMPLETED
            and ev["data"] is None
            and nxt["seq"] == ev["seq"] + 1
            and nxt["run_id"] == ev["run_id"]
            and nxt["step"] == ev["step"]
            and nxt["name"] == ev["name"]
            and nxt["label"] == ev["label"]
            and nxt["attempt"] == ev["attempt"]
        ):
            rows.append((*(nxt[c] for c in EVENT_COLS), ev["at"]))
            i += 2
        else:
            rows.append((*(ev[c] for c in EVENT_COLS), None))
            i += 1
    return rows


class StartRow(NamedTuple):
    """The ``step_started`` event a combined row stands for (its fields are an event row's)."""

    run_id: str
    seq: int
    kind: str
    step: str | None
    name: str | None
    label: str | None
    at: float
    attempt: int
    data: str | None
    started_at: float | None


def expand(rows: Any) -> list[Any]:
    """Stored event rows as the history's events, in order: a combined step row (started_at
    set) is its start, then itself."""
    out: list[Any] = []
    for r in rows:
        if r.started_at is not None:
            out.append(
                StartRow(
                    r.run_id,
                    r.seq - 1,
                    _STARTED,
                    r.step,
                    r.name,
                    r.label,
                    r.started_at,
                    r.attempt,
                    None,
                    None,
                )  # fmt: skip
            )
        out.append(r)
    return out


def simple(ops: list[Op]) -> bool:
    """Ops that only append events under a lease (a step's completion): the common case."""
    return all(simple_op(op) for op in ops)


def simple_op(op: Op) -> bool:
    """An op that only appends events under a lease (see :func:`simple`)."""
    return not (
        op.owner is None
        or op.logs
        or op.run_update
        or op.new_runs
        or op.consume_input is not None
        or op.wake_parent
        or op.tags
        or op.copy_tags_to
        or not op.events
        or op.messages
        or op.consume_message is not None
        or op.publish
    )


# ---------------------------------------------------------------- messages, published state

MESSAGE_COLS = ("run_id", "topic", "value", "sender", "created_at")
PUBLISH_COLS = ("run_id", "key", "value", "seq", "updated_at")


def _messages(op: Op, ph: _Ph) -> Generator[Cmd, Any, bool]:
    """An op's message taken, messages sent (each waking its addressee if it is suspended
    waiting) and keys published. -> whether a worker should be told (NOTIFY)."""
    if op.consume_message is not None:
        ph.reset()
        sql = f"UPDATE durapipe_messages SET consumed_seq = {ph()} WHERE id = {ph()} AND consumed_seq IS NULL"
        yield ("exec", sql, [op.consume_seq, op.consume_message])
    for m in op.messages:
        ph.reset()
        sql = f"INSERT INTO durapipe_messages ({', '.join(MESSAGE_COLS)}) VALUES ({', '.join(ph() for _ in MESSAGE_COLS)})"
        yield ("exec", sql, [m[c] for c in MESSAGE_COLS])
        ph.reset()
        sql = f"UPDATE durapipe_runs SET wake_at = {ph()} WHERE id = {ph()} AND status = 'waiting' AND lease_owner IS NULL"
        yield ("exec", sql, [m["created_at"], m["run_id"]])
    for p in op.publish:
        ph.reset()
        sql = (
            f"INSERT INTO durapipe_published ({', '.join(PUBLISH_COLS)}) "
            f"VALUES ({', '.join(ph() for _ in PUBLISH_COLS)}) ON CONFLICT (run_id, key) "
            "DO UPDATE SET value = excluded.value, seq = excluded.seq, updated_at = excluded.updated_at"
        )
        yield ("exec", sql, [p[c] for c in PUBLISH_COLS])
    return bool(op.messages or op.publish)


def _arrived(what: str, name: str, run_id: str, ph: _Ph) -> tuple[str, list[Any]]:
    """The query that finds what a suspending run waits for (``Op.wake_if``)."""
    if what == "child":  # the child, or the live link of its continue-as-new chain
        sql = (
            f"SELECT status FROM durapipe_runs WHERE (id = {ph()} OR chain_id = {ph()}) "
            "AND status <> 'continued'"
        )
        return sql, [name, name]
    table, col = (
        ("durapipe_messages", "topic") if what == "message" else ("durapipe_inputs", "name")
    )
    sql = f"SELECT id FROM {table} WHERE run_id = {ph()} AND {col} = {ph()} AND consumed_seq IS NULL LIMIT 1"
    return sql, [run_id, name]
