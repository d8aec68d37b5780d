"""The rows and events that start and end runs, built in one place.

A run's row and its ``run_started`` event (``Client.create_run``), the event and row update that
end an execution (the execution's settle, a run whose code cannot be found), and the events a
client writes to a run nobody holds (stop, cancel): every writer builds them here, so the
columns they set cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from . import _serde
from ._kinds import TERMINAL, EventKind, RunStatus


def run_event(
    run_id: str,
    seq: int,
    kind: EventKind,
    *,
    at: float,
    attempt: int,
    name: str | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """A run-level event (no step) as the journal writes it."""
    return {
        "run_id": run_id,
        "seq": seq,
        "kind": kind,
        "step": None,
        "name": name,
        "label": None,
        "at": at,
        "attempt": attempt,
        "data": data,
    }


def unleased_event(kind: EventKind, attempt: int) -> dict[str, Any]:
    """The event a client appends to a run nobody holds (the store numbers and times it)."""
    return {"kind": kind, "attempt": attempt, "data": None}


def end_update(status: RunStatus, *, now: float, error: dict[str, Any] | None) -> dict[str, Any]:
    """The row update of a run whose execution ends with ``status``: its lease is given up."""
    update: dict[str, Any] = {
        "status": status,
        "error": _serde.dumps(error) if error is not None else None,  # secrets masked
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if status in TERMINAL:
        update["finished_at"] = now
    return update


def new_run(
    *,
    run_id: str,
    pipeline: str,
    version: str,
    entrypoint: str,
    pinned: bool,
    inputs: str,
    now: float,
    owner: str | None,
    ttl: float,
    deadline_at: float | None = None,
) -> dict[str, Any]:
    """The row of a new top-level run: pending, or running leased to ``owner``."""
    return {
        "id": run_id,
        "pipeline": pipeline,
        "version": version,
        "entrypoint": entrypoint,
        "pinned": pinned,
        "status": RunStatus.RUNNING if owner else RunStatus.PENDING,
        "inputs": inputs,
        "parent_run_id": None,
        "parent_step": None,
        "root_run_id": run_id,
        "depth": 0,
        "prefix": pipeline,
        "created_at": now,
        "updated_at": now,
        "attempt": 1 if owner else 0,
        "lease_owner": owner,
        "lease_expires_at": now + ttl if owner else None,
        "deadline_at": deadline_at,
        "recoveries": 0,
    }


def continued_run(
    row: Any, *, run_id: str, version: str, entrypoint: str, inputs: str, now: float
) -> dict[str, Any]:
    """The row of the run that continues ``row`` (dp.continue_as_new): pending, in the same
    place of its run tree, in the chain of ``row`` (whose first run's id is the chain's id)."""
    top = row.parent_run_id is None
    return {
        "id": run_id,
        "pipeline": row.pipeline,
        "version": version,
        "entrypoint": entrypoint,
        "pinned": bool(row.pinned),
        "status": RunStatus.PENDING,
        "inputs": inputs,
        "parent_run_id": row.parent_run_id,
        "parent_step": row.parent_step,
        "root_run_id": run_id if top else row.root_run_id,
        "depth": row.depth,
        "prefix": row.prefix,
        "created_at": now,
        "updated_at": now,
        "attempt": 0,
        "continued_from": row.id,
        "chain_id": getattr(row, "chain_id", None) or row.id,
        "detached": getattr(row, "detached", None),
    }


def scheduled_run(
    *,
    run_id: str,
    schedule: str,
    tick: float,
    pipeline: str,
    version: str,
    entrypoint: str,
    pinned: bool,
    inputs: str,
    now: float,
    by: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The row and ``run_started`` event of a schedule's run for ``tick`` (pending).

    ``by`` says who started it (host, pid, worker), kept in the event as a start's host and pid.
    """
    row = new_run(
        run_id=run_id,
        pipeline=pipeline,
        version=version,
        entrypoint=entrypoint,
        pinned=pinned,
        inputs=inputs,
        now=now,
        owner=None,
        ttl=0.0,
    )
    row["schedule"] = schedule
    row["scheduled_at"] = tick
    started = run_event(
        run_id,
        1,
        EventKind.RUN_STARTED,
        at=now,
        attempt=0,
        name=pipeline,
        data=_serde.dumps(
            {
                "inputs": _serde.loads(inputs),
                "version": version,
                "entrypoint": entrypoint,
                "pinned": pinned,
                "schedule": schedule,
                "scheduled_at": tick,
                **by,
            }
        ),
    )
    return row, [started]
