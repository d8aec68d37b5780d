"""Messages addressed to runs (``dp.send``, ``Client.send`` -> ``dp.recv``) and the state runs
publish (``dp.set_event`` -> ``Client.get_event``).

A pipeline's sends, takes and publications are written by the journal with their events (the
``Op`` fields ``messages``, ``consume_message``, ``publish``; see ``journal_sql``); this module
holds what a client does outside a lease, and the reads.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from .._kinds import ENDED, RunStatus
from . import schema as S
from .base import StoreBase


class Messages(StoreBase):
    """Messages sent from outside a run, read by the run; published state read by anyone."""

    async def send_message(
        self, run_id: str, topic: str, value: str, *, now: float, sender: str | None = None
    ) -> tuple[int | None, str | None]:
        """Queue a message for ``run_id`` and wake the run if it is suspended waiting.

        -> ``(message id, the run's status)``; the id is None (nothing written) when there is
        no such run (status None) or it has ended. The run's row is locked first, as a
        suspending worker's write locks it: either that write sees this message and stays due,
        or this one sees the run suspended and wakes it.
        """
        r = S.runs.c
        lock = self._lock(select(r.status).where(r.id == run_id))

        def _tx(conn: Connection) -> tuple[int | None, str | None]:
            row = conn.execute(lock).first()
            if row is None:
                return None, None
            if row.status in ENDED:
                return None, str(row.status)
            res = conn.execute(
                insert(S.messages).values(
                    run_id=run_id, topic=topic, value=value, sender=sender, created_at=now
                )
            )
            woken = conn.execute(
                update(S.runs)
                .where(r.id == run_id, r.status == RunStatus.WAITING, r.lease_owner.is_(None))
                .values(wake_at=now)
            ).rowcount
            # A parked run is due now: wake the workers' claim loops ("run"); a held one, only
            # the process holding it (it looks again at once).
            self._notify(conn, "run" if woken else f"input:{run_id}")
            pk = res.inserted_primary_key
            return (int(pk[0]) if pk else 0), str(row.status)

        return await self._write(_tx)

    async def next_message(
        self, run_id: str, topic: str, *, skip: Collection[int] = ()
    ) -> Row[Any] | None:
        """The oldest message of ``topic`` for the run not taken yet (nor being taken: ``skip``)."""
        c = S.messages.c
        q = select(S.messages).where(c.run_id == run_id, c.topic == topic, c.consumed_seq.is_(None))
        if skip:
            q = q.where(c.id.not_in(list(skip)))
        q = q.order_by(c.id).limit(1)

        def _tx(conn: Connection) -> Any:
            return conn.execute(q).first()

        return await self._read(_tx)

    async def messages_of(self, run_id: str) -> list[Row[Any]]:
        """Every message addressed to the run, taken or not, in order."""
        q = select(S.messages).where(S.messages.c.run_id == run_id).order_by(S.messages.c.id)

        def _tx(conn: Connection) -> Any:
            return list(conn.execute(q).all())

        return await self._read(_tx)

    async def published(self, run_id: str, key: str | None = None) -> list[Row[Any]]:
        """The run's published keys (or just ``key``) with their latest values, by key."""
        c = S.published.c
        q = select(S.published).where(c.run_id == run_id)
        if key is not None:
            q = q.where(c.key == key)
        q = q.order_by(c.key)

        def _tx(conn: Connection) -> Any:
            return list(conn.execute(q).all())

        return await self._read(_tx)
