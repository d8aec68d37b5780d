"""Fork and edit (``Client.fork``, ``Client.edit``): repairing a run without rewriting history.

A fork is a new run whose history is a copy of the source's up to a step, written in one
transaction with its link back; an edit is one event appended to a stopped, failed or blocked
run. Both refuse a run a live process holds, and a pinned run whose version is not the one
loaded here. The rules of which calls a fork keeps and what an edit supersedes are the engine's
(``durapipe/_engine/repair.py``); docs/repair.md explains them to users.
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import TYPE_CHECKING, Any

from . import _serde
from ._definition import PipelineDef, load_target, registered
from ._engine import History
from ._engine.repair import (
    EDITABLE,
    apply_edits,
    before,
    call_of,
    completion,
    fork_events,
    key_parts,
    valid_key,
)
from ._ids import new_id, validate_run_id
from ._kinds import ACTIVE, COMPLETIONS, EventKind, RunStatus
from ._records import new_run, run_event
from .errors import (
    ConfigError,
    DurapipeError,
    InvalidInput,
    InvalidRunState,
    RunNotFound,
    SerializationError,
)

if TYPE_CHECKING:
    from ._client import Client

EDITABLE_STATUSES = (RunStatus.STOPPED, RunStatus.FAILED, RunStatus.BLOCKED)
MAX_REASON = 2000


def operator(by: str | None) -> str:
    """Who forks or edits: ``by``, else the OS user."""
    if by is not None:
        if not by.strip() or len(by) > 200 or not _serde.storable_text(by):
            raise InvalidInput("--by: give who makes the change, 1-200 characters of text")
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or f"uid {os.getuid()}"


def _held(row: Any, now: float, what: str) -> None:
    if row.lease_owner is not None and (row.lease_expires_at or 0) >= now:
        raise InvalidRunState(
            f"run {row.id} is {row.status}, held by {row.lease_owner}; stop it first "
            f"(`durapipe stop {row.id}`), then {what} it"
        )


def _code(row: Any, pdef: PipelineDef | None, what: str) -> PipelineDef:
    """The pipeline the run continues on here; a pinned run needs its own version."""
    found = registered(row.pipeline)
    if pdef is None and found is not None and found.entrypoint == row.entrypoint:
        pdef = found  # imported in this process already: the same code
    if pdef is None:
        try:
            pdef = load_target(row.entrypoint)
        except DurapipeError as exc:
            raise ConfigError(
                f"cannot {what} run {row.id}: its code does not load here ({exc})"
            ) from None
    if row.pinned and pdef.version != row.version:
        raise InvalidRunState(
            f"run {row.id} is pinned to version {row.version} of {row.pipeline}, but version "
            f"{pdef.version} is loaded here; {what} it where version {row.version} is loaded"
        )
    return pdef


def resolve_step(row: Any, events: list[Any], step: str, option: str = "STEP") -> str:
    """A step as ``durapipe show`` prints it (its key, e.g. ``3`` or ``5/1/2``, or its name,
    e.g. ``build_1``) -> its key in this history."""
    recorded = [e.step for e in events if e.step]
    if not valid_key(step):
        keys = {e.step for e in events if e.step and e.label == step}
        if len(keys) == 1:
            return str(keys.pop())
        raise InvalidInput(
            f"run {row.id} has no step {step!r}; give {option} as `durapipe show {row.id}` "
            "prints it: a key (3, 5/1/2) or a name (build_1)"
        )
    if step in recorded or any(k.startswith(step + "/") for k in recorded) or step == "1":
        return step
    last = max(recorded, key=key_parts, default=None)
    if last is None or before(last, step):
        raise InvalidInput(
            f"step {step} is after the last recorded call of run {row.id} "
            f"({last or 'it recorded none'}); give a recorded step (`durapipe show {row.id}`)"
        )
    raise InvalidInput(
        f"run {row.id} recorded no call at step {step}; give a step as `durapipe show {row.id}` prints it"
    )


def default_point(row: Any, records: dict[str, list[Any]]) -> str:
    """The step a fork without --from starts at: the step whose failure failed the run, else
    the first call that did not complete."""
    if row.status == RunStatus.FAILED and row.error:
        origin = (_serde.loads(row.error) or {}).get("step")
        if origin:
            return str(origin)
    open_ = sorted((k for k, evs in records.items() if completion(evs) is None), key=key_parts)
    if open_:
        return open_[0]
    raise InvalidInput(
        f"run {row.id} has no failed or interrupted step to fork from; give --from STEP "
        f"(as `durapipe show {row.id}` prints it; --from 1 starts it over)"
    )


async def fork_run(
    client: Client,
    run_id: str,
    *,
    from_step: str | None = None,
    inputs: dict[str, Any] | None = None,
    new_run_id: str | None = None,
    by: str | None = None,
    pdef: PipelineDef | None = None,
    owner: str | None = None,
    ttl: float = 30.0,
) -> tuple[Any, str]:
    """Fork ``run_id`` (see :meth:`Client.fork`); leased to ``owner`` when given.
    -> (the new run's row, the fork point)."""
    row = await client.row(run_id)
    if new_run_id is not None and (why := validate_run_id(new_run_id)):
        raise InvalidInput(f"run id {new_run_id!r} is not usable: {why}")
    if row.parent_run_id is not None:
        raise InvalidRunState(
            f"run {run_id} is a child run of {row.parent_run_id}; fork its top run "
            f"{row.root_run_id} from the step that started it"
        )
    who = operator(by)
    now = client.store_now()
    _held(row, now, "fork")
    events = await client.store.events(run_id)
    history = History(events)
    point = (
        default_point(row, history.records)
        if from_step is None
        else resolve_step(row, events, from_step, "--from")
    )
    pdef = _code(row, pdef, "fork")
    merged = pdef.bind_inputs({**(_serde.loads(row.inputs) or {}), **(inputs or {})})
    text = _serde.dumps(merged, what="the inputs")
    rid = new_run_id or new_id("run")
    new = new_run(
        run_id=rid,
        pipeline=pdef.name,
        version=pdef.version,
        entrypoint=row.entrypoint,
        pinned=bool(row.pinned),
        inputs=text,
        now=now,
        owner=owner,
        ttl=ttl,
    )
    started = run_event(
        rid,
        1,
        EventKind.RUN_STARTED,
        at=now,
        attempt=new["attempt"],
        name=pdef.name,
        data=_serde.dumps(
            {
                "inputs": merged,
                "version": pdef.version,
                "entrypoint": row.entrypoint,
                "pinned": bool(row.pinned),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "forked_from": {"run_id": run_id, "step": point, "by": who},
            }
        ),
    )
    copied = fork_events(history.records, point)
    kept = {e.seq for e in copied}
    # Patches the run passed before the first call the fork runs again hold in the fork too.
    cut = min((e.seq for e in events if e.step and e.seq not in kept), default=None)
    copied += [
        e for e in events if e.kind == EventKind.PATCH_MARKER and (cut is None or e.seq < cut)
    ]
    copied.sort(key=lambda e: e.seq)
    rows = [started] + [
        {
            "run_id": rid,
            "seq": i,
            "kind": e.kind,
            "step": e.step,
            "name": e.name,
            "label": e.label,
            "at": now,  # this run's clock: its working time counts from the fork, not before
            "attempt": 0,
            "data": e.data,
        }
        for i, e in enumerate(copied, start=2)
    ]
    link = {
        "run_id": rid,
        "source_run_id": run_id,
        "step": point,
        "created_at": now,
        "created_by": who,
    }
    why = await client.store.fork_run(
        source_run_id=run_id,
        source_last_seq=events[-1].seq if events else 0,
        row=new,
        events=rows,
        link=link,
        now=now,
    )
    if why == "gone":
        raise RunNotFound(run_id)
    if why == "held":
        _held(await client.row(run_id), client.store_now(), "fork")
        raise InvalidRunState(f"run {run_id} was taken while it was being forked; try again")
    if why == "changed":
        raise InvalidRunState(
            f"run {run_id} moved on while it was being forked; nothing was forked — try again"
        )
    if why == "exists":
        raise InvalidInput(f"run id {rid!r} is taken by another run; choose another --run-id")
    return await client.row(rid), point


async def edit_result(
    client: Client,
    run_id: str,
    step: str,
    result: Any,
    *,
    reason: str,
    by: str | None = None,
    rerun_after: bool = True,
    pdef: PipelineDef | None = None,
) -> dict[str, Any]:
    """Edit the result recorded at ``step`` (see :meth:`Client.edit`). -> the edit's record."""
    row = await client.row(run_id)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("give a --reason: why the result is edited (it is kept with the edit)")
    if len(reason) > MAX_REASON or not _serde.storable_text(reason):
        raise InvalidInput(f"--reason: at most {MAX_REASON} characters of text")
    who = operator(by)
    now = client.store_now()
    _held(row, now, "edit")
    if row.status in ACTIVE:
        raise InvalidRunState(
            f"run {run_id} is {row.status}; stop it first (`durapipe stop {run_id}`), then edit it"
        )
    if row.status not in EDITABLE_STATUSES:
        raise InvalidRunState(
            f"run {run_id} has ended ({row.status}), so it cannot be edited; fork it instead: "
            f"durapipe fork {run_id} --from STEP"
        )
    if row.pinned:
        _code(row, pdef, "edit")
    try:
        new = _serde.loads(_serde.dumps(result, what="the edited result"))
    except SerializationError as exc:
        raise InvalidInput(str(exc)) from None
    events = await client.store.events(run_id)
    key = resolve_step(row, events, step)
    # The calls as the edits so far leave them (a failed step's failure included: it is what
    # an edit of the step that failed the run supersedes).
    records: dict[str, list[Any]] = {}
    for e in events:
        if e.step is not None:
            records.setdefault(e.step, []).append(e)
    apply_edits(records, events)
    evs = records.get(key)
    if not evs:
        raise InvalidInput(
            f"step {key} of run {run_id} has no call to edit (an earlier edit runs it again); "
            f"see `durapipe show {run_id}`"
        )
    fam, name, label = call_of(evs)
    if fam not in EDITABLE:
        raise InvalidInput(
            f"step {key} ({label or name}) is a {fam}: it has no result to edit; edit a step, "
            "an exec, an input, a child run or a recorded value"
        )
    done = completion(evs)
    old = None if done is None else {"kind": done.kind, "data": _serde.loads(done.data)}
    data: dict[str, Any] = {
        "family": fam,
        "old": old,
        "new": new,
        "reason": reason,
        "by": who,
        "rerun_after": rerun_after,
    }
    if fam == "child":
        started = next((e for e in evs if e.kind == EventKind.CHILD_STARTED), None)
        src = done if done is not None and done.kind in COMPLETIONS else started
        data["child_run_id"] = (_serde.loads(src.data) or {}).get("child_run_id") if src else None
    event = {
        "kind": EventKind.RESULT_EDITED,
        "step": key,
        "name": name,
        "label": label,
        "at": now,
        "attempt": row.attempt,
        "data": _serde.dumps(data, what="the edit", limit=3 * _serde.MAX_VALUE_BYTES),
    }
    why = await client.store.append_edit(
        run_id,
        event,
        statuses=EDITABLE_STATUSES,
        last_seq=events[-1].seq if events else 0,
        now=now,
    )
    if why == "gone":
        raise RunNotFound(run_id)
    if why == "held":
        _held(await client.row(run_id), client.store_now(), "edit")
        raise InvalidRunState(f"run {run_id} was taken while it was being edited; try again")
    if why is not None:
        raise InvalidRunState(
            f"run {run_id} changed while it was being edited (now {why}); nothing was edited — "
            "look again and retry"
        )
    return {"step": key, "label": label, **data}
