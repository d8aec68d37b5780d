"""Queues: their limits, and taking runs off them — enforced by the claim, in SQL.

A run started on a queue waits in it (status ``queued``) until a claim takes it off. A claim
takes runs off a queue only under a lock on the queue's row (``FOR UPDATE`` on PostgreSQL;
SQLite's write transaction locks the whole database), so the claims of one queue are serialised
across every worker and machine, and it counts what the queue has in flight from the runs'
rows in that same transaction — never from a worker's memory:

* a run taken off the queue holds one of its slots while it is ``pending`` (released, waiting
  for another worker), ``running``, ``sleeping`` or ``waiting`` — until it ends, stops or
  blocks. A dead worker's run keeps its slot until another worker takes it over (when its lease
  expires) and finishes it;
* ``concurrency`` caps those slots for the whole queue, ``key_concurrency`` per key;
* ``rate_limit`` runs per ``rate_window`` seconds caps how many were taken off in any window
  ending now (a sliding window over ``dequeued_at``);
* the line is served by priority (higher first), then oldest first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from .._kinds import RunStatus
from . import schema as S
from .base import StoreBase

# The statuses in which a run taken off its queue holds one of the queue's slots.
HOLDS_SLOT = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SLEEPING, RunStatus.WAITING)
# A claim that finds a queue locked by another claim looks again after this many seconds.
RETRY_LOCKED = 0.05


@dataclass(frozen=True, kw_only=True)
class QueueLimits:
    """A queue's settings as stored (``durapipe_queues``)."""

    name: str
    concurrency: int | None
    key_concurrency: int | None
    rate_limit: int | None
    rate_window: float | None
    priority: bool


def claim_queued(
    conn: Connection,
    *,
    owner: str,
    claimable: list[Any],
    limit: int,
    ttl: float,
    now: float,
    lock: Any,
) -> tuple[list[Any], float | None]:
    """Take up to ``limit`` runs off the queues that have room, in this transaction.

    -> (the claimed rows, when a rate window next has room for a waiting run). ``claimable``
    are the claim filter's conditions (the worker's pipelines, holds); ``lock`` turns a select
    into one that locks the rows it reads (the dialect's).
    """
    r, q = S.runs.c, S.queues.c
    lined = exists().where(r.queue == q.name, r.status == RunStatus.QUEUED)
    names = [n for (n,) in conn.execute(select(q.name).where(lined).order_by(q.name))]
    rows: list[Any] = []
    next_at: float | None = None
    for name in names:
        if len(rows) >= limit:
            break
        # The lock that serialises the claims of this queue, held until the transaction ends.
        # A queue another claim holds is skipped rather than waited for: that claim takes what
        # the queue has room for, up to its own capacity; this worker looks again shortly
        # (``next_at``) in case room is left, instead of queueing behind it on every wake-up.
        lim = conn.execute(lock(select(S.queues).where(q.name == name), skip_locked=True)).first()
        if lim is None:
            soon = time.time() + RETRY_LOCKED
            next_at = soon if next_at is None else min(next_at, soon)
            continue
        room = limit - len(rows)
        in_queue = r.queue == name
        if lim.concurrency is not None:
            running = conn.execute(
                select(func.count()).where(in_queue, r.status.in_(HOLDS_SLOT))
            ).scalar_one()
            room = min(room, lim.concurrency - int(running))
        # The time the runs leave the line is now, under the lock and after the count of the
        # slots in use — not when the claim was asked (it may have waited for the lock
        # meanwhile). The rate window counts these times, and a stale one would let a later
        # claim think the window had room; and a run whose end freed a slot this count saw
        # was stamped finished before it committed, so before this.
        now = max(now, time.time())
        if lim.rate_limit is not None and lim.rate_window is not None:
            since = now - lim.rate_window
            taken, oldest = conn.execute(
                select(func.count(), func.min(r.dequeued_at)).where(in_queue, r.dequeued_at > since)
            ).one()
            if int(taken) >= lim.rate_limit and oldest is not None:
                due = float(oldest) + lim.rate_window
                next_at = due if next_at is None else min(next_at, due)
            room = min(room, lim.rate_limit - int(taken))
        if room <= 0:
            continue
        conds = [in_queue, r.status == RunStatus.QUEUED, *claimable]
        per_key: dict[str, int] = {}
        fetch = room
        if lim.key_concurrency is not None:
            counted = conn.execute(
                select(r.queue_key, func.count())
                .where(in_queue, r.status.in_(HOLDS_SLOT), r.queue_key.is_not(None))
                .group_by(r.queue_key)
            ).all()
            per_key = {k: int(n) for k, n in counted}
            full = [k for k, n in per_key.items() if n >= lim.key_concurrency]
            if full:
                conds.append(r.queue_key.is_(None) | r.queue_key.not_in(full))
            fetch = room * 4  # a key may recur at the head of the line; read a little further
        line = (
            select(r.id, r.queue_key)
            .where(*conds)
            .order_by(r.priority.desc(), r.created_at, r.id)
            .limit(fetch)
        )
        take: list[str] = []
        for rid, key in conn.execute(line):
            if len(take) >= room:
                break
            if key is not None and lim.key_concurrency is not None:
                if per_key.get(key, 0) >= lim.key_concurrency:
                    continue
                per_key[key] = per_key.get(key, 0) + 1
            take.append(rid)
        if not take:
            continue
        got = conn.execute(
            update(S.runs)
            .where(r.id.in_(take), r.status == RunStatus.QUEUED)
            .values(
                lease_owner=owner,
                lease_expires_at=now + ttl,
                attempt=r.attempt + 1,
                status=RunStatus.RUNNING,
                dequeued_at=now,
                updated_at=now,
            )
            .returning(*S.runs.c)
        ).all()
        rows.extend(got)
    return rows, next_at


class Queues(StoreBase):
    """Declaring queues and reading where they stand."""

    async def set_queue(self, limits: QueueLimits, *, now: float) -> None:
        """Create the queue or replace its settings (they apply from the next claim)."""
        values = {
            "name": limits.name,
            "concurrency": limits.concurrency,
            "key_concurrency": limits.key_concurrency,
            "rate_limit": limits.rate_limit,
            "rate_window": limits.rate_window,
            "priority": limits.priority,
            "updated_at": now,
        }
        q = S.queues.c

        def _tx(conn: Connection) -> None:
            # Under the queue's lock, as claims are: a claim sees the old or the new limits.
            found = conn.execute(self._lock(select(q.name).where(q.name == limits.name))).first()
            if found is None and self.is_sqlite:  # its write transaction excludes others
                conn.execute(insert(S.queues).values(values))
            elif found is None:
                try:
                    with conn.begin_nested():  # a savepoint: two workers may declare it at once
                        conn.execute(insert(S.queues).values(values))
                except IntegrityError:  # declared meanwhile: the later settings win
                    conn.execute(update(S.queues).where(q.name == limits.name).values(values))
            else:
                conn.execute(update(S.queues).where(q.name == limits.name).values(values))
            self._notify(conn, "run")  # a raised limit may make waiting runs claimable

        await self._write(_tx)

    async def get_queue(self, name: str) -> QueueLimits | None:
        def _tx(conn: Connection) -> Any:
            return conn.execute(select(S.queues).where(S.queues.c.name == name)).first()

        row = await self._read(_tx)
        return _limits(row) if row is not None else None

    async def queue_stats(self, *, now: float) -> list[tuple[QueueLimits, dict[str, Any]]]:
        """Every queue with its depth, runs holding slots, oldest waiting and recent takes."""
        r, q = S.runs.c, S.queues.c

        def _tx(conn: Connection) -> Any:
            out = []
            for lim in conn.execute(select(S.queues).order_by(q.name)).all():
                in_queue = r.queue == lim.name
                depth, oldest = conn.execute(
                    select(func.count(), func.min(r.created_at)).where(
                        in_queue, r.status == RunStatus.QUEUED
                    )
                ).one()
                running = conn.execute(
                    select(func.count()).where(in_queue, r.status.in_(HOLDS_SLOT))
                ).scalar_one()
                taken = None
                if lim.rate_window is not None:
                    taken = conn.execute(
                        select(func.count()).where(in_queue, r.dequeued_at > now - lim.rate_window)
                    ).scalar_one()
                out.append(
                    (
                        _limits(lim),
                        {
                            "depth": int(depth),
                            "running": int(running),
                            "oldest_waiting_at": oldest,
                            "taken_in_window": None if taken is None else int(taken),
                        },
                    )
                )
            return out

        return list(await self._read(_tx))

    async def queue_places(self, run_ids: list[str]) -> dict[str, tuple[str, int]]:
        """For each of these runs still waiting in a queue: (its queue, how many are ahead)."""
        if not run_ids:
            return {}
        r = S.runs.c
        me = S.runs.alias("me")
        m = me.c
        ahead = (
            select(func.count())
            .where(
                r.queue == m.queue,
                r.status == RunStatus.QUEUED,
                (r.priority > m.priority)
                | and_(r.priority == m.priority, r.created_at < m.created_at)
                | and_(r.priority == m.priority, r.created_at == m.created_at, r.id < m.id),
            )
            .scalar_subquery()
        )
        stmt = select(m.id, m.queue, ahead).where(
            m.id.in_(run_ids), m.status == RunStatus.QUEUED, m.queue.is_not(None)
        )

        def _tx(conn: Connection) -> Any:
            return {rid: (queue, int(n)) for rid, queue, n in conn.execute(stmt)}

        return dict(await self._read(_tx))


def _limits(row: Row[Any]) -> QueueLimits:
    return QueueLimits(
        name=row.name,
        concurrency=row.concurrency,
        key_concurrency=row.key_concurrency,
        rate_limit=row.rate_limit,
        rate_window=row.rate_window,
        priority=bool(row.priority),
    )
