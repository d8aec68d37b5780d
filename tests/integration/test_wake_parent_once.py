"""Children ending make their suspended parent due once: the first child's end sets the parent's
wake time, and later ones find it due already and leave its row alone (10,000 children each
taking the parent's row lock in turn serialised a fan-out on PostgreSQL). Both databases."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import PIPELINES

import durapipe as dp
from durapipe._definition import load_target
from durapipe._store.store import Op

pytestmark = pytest.mark.asyncio

WORK = str(PIPELINES / "work.py")


async def _end(store: Any, rid: str, parent: str, at: float) -> None:
    update = {"status": "completed", "updated_at": at, "finished_at": at, "lease_owner": None}
    await store.journal.submit(
        Op(run_id=rid, owner=None, attempt=None, run_update=update, wake_parent=parent)
    )


async def _park(store: Any, rid: str, wake_at: float | None) -> None:
    """The parent suspended, waiting for its children (no lease)."""
    await store._write(
        lambda c: c.exec_driver_sql(
            "UPDATE durapipe_runs SET status = 'waiting', lease_owner = NULL, "
            f"lease_expires_at = NULL, wake_at = {'NULL' if wake_at is None else wake_at} "
            f"WHERE id = '{rid}'"
        )
    )


async def test_a_parent_already_due_is_not_woken_again(store: Any) -> None:
    pdef = load_target(f"{WORK}:five")
    client = dp.Client(store)
    parent, _ = await client.create_run(pdef, {}, owner=None, ttl=30)
    kids = [(await client.create_run(pdef, {}, owner=None, ttl=30))[0].id for _ in range(3)]
    now = time.time()
    await _park(store, parent.id, None)  # waiting with no timeout

    await _end(store, kids[0], parent.id, now)
    assert (await store.get_run(parent.id)).wake_at == now  # due from the first child's end

    await _end(store, kids[1], parent.id, now + 5)  # due already: left as it is
    assert (await store.get_run(parent.id)).wake_at == now

    # Suspended again with a later wake time (a timeout): the next child's end makes it due.
    await _park(store, parent.id, now + 3600)
    await _end(store, kids[2], parent.id, now + 10)
    assert (await store.get_run(parent.id)).wake_at == now + 10
