"""Looking at runs and workers: list, show, logs, result, workers."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import _config
from .._kinds import (
    RESUMABLE_EXTRA,
    TERMINAL,
    EventKind,
    RunStatus,
)
from ._app import DbOpt, JsonOpt, NoTsOpt, _connect_for_run, _err, _out, _print_rich, _run

# The client, the console and the engine are imported when a command runs, not with the CLI
# (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from .._client import AdminClient, RunView


def list_(
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")
    ] = None,
    roots: Annotated[bool, typer.Option("--roots", help="Hide child runs.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.")] = 50,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="KEY=VALUE: only runs with this tag. Repeatable (all must match)."
        ),
    ] = None,
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs, newest first, with counts by status.

    Each status is counted up to 10,000 (`completed: 10000+` beyond), so the counts cost the same
    with a year of history. A continue-as-new chain shows as its live link (`--status continued` lists the ended links).
    """

    async def go() -> int:
        from .._client import LIST_COUNT_CAP, AdminClient
        from .._console import render_list
        from .._tag_rules import parse_tags

        tags = parse_tags(tag)
        async with await AdminClient.open(database_url) as client:
            if json_out:
                views = await client.list(
                    status=status, pipeline=pipeline, roots_only=roots, limit=limit, tags=tags
                )
                _out(json.dumps([_run_json(v) for v in views], ensure_ascii=False))
                return 0
            rows, counts, timelines = await client.overview(
                status=status, pipeline=pipeline, roots_only=roots, limit=limit, tags=tags
            )
            places = await client.queue_places([r.id for r in rows if r.status == "queued"])
            _print_rich(
                render_list(
                    rows,
                    counts,
                    now=time.time(),
                    timelines=timelines,
                    places=places,
                    count_cap=LIST_COUNT_CAP,
                )
            )
        return 0

    _run(go())


def _iso(at: float | None) -> str | None:
    """A time for JSON: ISO 8601, local, with milliseconds and the offset from UTC."""
    if at is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def _run_json(v: RunView) -> dict[str, Any]:
    return {
        "run_id": v.run_id,
        "pipeline": v.pipeline,
        "version": v.version,
        "status": v.status,
        "inputs": v.inputs,
        "output": v.output,
        "error": v.error,
        "parent_run_id": v.parent_run_id,
        "root_run_id": v.root_run_id,
        "pinned": v.pinned,
        "attempt": v.attempt,
        "entrypoint": v.entrypoint,
        "created_at": _iso(v.created_at),
        "updated_at": _iso(v.updated_at),
        "finished_at": _iso(v.finished_at),
        "waiting_for": v.waiting_for,
        "tags": v.tags,
        "continued_from": v.continued_from,
        "detached": v.detached,
        "queue": v.queue,
        "queue_key": v.queue_key,
        "priority": v.priority,
    }


def _links(v: RunView, successor: str | None) -> list[str]:
    """What `show` says of a run's tags and its continue-as-new chain."""
    out = []
    if v.tags:
        out.append("tags: " + ", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())))
    if v.continued_from:
        out.append(f"continues run {v.continued_from}")
    if successor:
        out.append(f"continued as run {successor}")
    if v.detached:
        out.append(f"detached from its parent {v.parent_run_id}")
    return out


def _waits(v: RunView, events: list[Any]) -> list[str]:
    """Every wait the run is in (several under dp.gather), each with what ends it."""
    from .._console import open_waits

    out = []
    for e in open_waits(v.status, events):
        data = json.loads(e.data) if e.data else {}
        if e.kind == EventKind.INPUT_REQUESTED:
            prompt = f" ({data['prompt']})" if data.get("prompt") else ""
            out.append(
                f"Waiting for input '{e.name}'{prompt} — answer with: durapipe input {v.run_id} {e.name} VALUE"
            )
        elif e.kind == EventKind.CHILD_STARTED:
            out.append(f"Waiting for child run {data.get('child_run_id')}")
        elif e.kind == EventKind.RECV_STARTED:  # messages, dp.first
            out.append(
                f"Waiting for a message on '{e.name}' — send one with: durapipe send {v.run_id} {e.name} VALUE"
            )
        elif e.kind == EventKind.FIRST_STARTED:
            out.append(f"Waiting for the first of: {', '.join(data.get('waits') or [])}")
        elif e.kind == EventKind.STEP_RETRY:
            if data.get("retry_at"):  # the try after the delay has not started yet
                at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["retry_at"]))
                out.append(f"Retrying {e.label} (try {data.get('try', 0) + 1}) at {at}")
        elif data.get("wake_at"):
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["wake_at"]))
            out.append(f"Sleeping until {at}")
    return out


async def _who_can_take(client: AdminClient, row: Any) -> str | None:
    """Why nobody will pick this run up, when that is so (or why it was aborted)."""
    if row.status == RunStatus.ABORTED and row.error:
        return "aborted: " + str(json.loads(row.error).get("message", ""))
    if row.lease_owner is not None or row.status not in (
        RunStatus.PENDING,
        RunStatus.SLEEPING,
        RunStatus.WAITING,
    ):
        return None
    for h in await client.holds():
        if h.pipeline == row.pipeline and h.version in ("", row.version):
            return (
                f"held by `durapipe stop --pipeline {row.pipeline}`; "
                f"release with: durapipe resume --pipeline {row.pipeline}"
            )
    for w in await client.live_workers(now=time.time()):
        carried = json.loads(w.pipelines)
        if row.pipeline in carried and (not row.pinned or carried[row.pipeline] == row.version):
            return None
    need = f"{row.pipeline} version {row.version} (pinned)" if row.pinned else row.pipeline
    return (
        f"no live worker can take this run: none carries {need}; "
        f"start one with `durapipe worker -m MODULE`, or `durapipe resume {row.id}`"
    )


def show(
    run_id: Annotated[str, typer.Argument()],
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a run: its steps, children, output or error, and what it waits for."""

    async def go() -> int:
        from .._client import event_json
        from .._console import (
            fork_lines,
            fork_link_json,
            queued_place,
            render_published,
            render_show,
        )

        async with await _connect_for_run(database_url, run_id) as client:
            view = await client.get(run_id)
            events = await client.history(run_id)
            kids = await client.children(run_id)
            row = await client.row(run_id)
            note = await _who_can_take(client, row)
            successor = await client.successor(row)
            source, forks = await client.fork_links(run_id)
            waits = _waits(view, events)
            place = (await client.queue_places([run_id])).get(run_id)
            if place is not None:
                waits.insert(0, f"{queued_place(*place).capitalize()}: waiting for a slot")
            if json_out:
                doc = _run_json(view)
                if view.schedule is not None:  # a schedule's tick started it
                    doc["schedule"] = view.schedule
                    doc["scheduled_at"] = _iso(view.scheduled_at)
                doc["events"] = [{**event_json(e), "at": _iso(e.at)} for e in events]
                doc["children"] = [k.id for k in kids]
                doc["continued_as"] = successor
                doc["note"] = note
                doc["published"] = await client.published(run_id)  # dp.set_event
                links = [fork_link_json(source, source and source.source_run_id)] + [
                    fork_link_json(f, f.run_id) for f in forks
                ]
                for link in links:
                    if link is not None:
                        link["at"] = _iso(link["at"])
                doc["forked_from"], doc["forks"] = links[0], links[1:]
                doc["queue_ahead"] = place[1] if place is not None else None
                _out(json.dumps(doc, ensure_ascii=False))
                return 0
            tree = kids
            if kids:  # the whole tree below this run: every run of its root, one query
                tree = await client.tree(row.root_run_id)
            _print_rich(
                render_show(
                    row,
                    events,
                    children=tree,
                    waits=waits,
                    now=time.time(),
                    note=note,
                    links=_links(view, successor) + fork_lines(source, forks),
                )
            )
            published = await client.published(run_id)  # dp.set_event
            if published:
                _print_rich(render_published(published))
        return 0

    _run(go())


def logs(
    run_id: Annotated[str, typer.Argument()],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    database_url: DbOpt = None,
    json_out: JsonOpt = False,
    no_timestamps: NoTsOpt = False,
) -> None:
    """Print a run's log — the whole run tree as one ordered log."""

    async def go() -> int:
        import asyncio

        from .._console import LineFormatter, record_json, use_color

        async with await _connect_for_run(database_url, run_id) as client:
            row = await client.row(run_id)
            fmt = LineFormatter(timestamps=not no_timestamps, color=use_color(sys.stdout))
            last = 0
            while True:
                batch = await client.read_logs(row.root_run_id, after_id=last)
                if row.parent_run_id is not None:
                    batch_view = [
                        r
                        for r in batch
                        if r.prefix == row.prefix or r.prefix.startswith(row.prefix + ".")
                    ]
                else:
                    batch_view = batch
                if batch and last == 0 and not json_out:
                    fmt.fit(r.prefix for r in batch_view)
                for r in batch_view:
                    if json_out:
                        _out(json.dumps(record_json(r), ensure_ascii=False))
                    else:
                        _out(fmt.format(prefix=r.prefix, line=r.line, stream=r.stream, at=r.at))
                if batch:
                    last = batch[-1].id
                    if len(batch) >= 5000:
                        continue
                if not follow:
                    return 0
                cur = await client.row(run_id)
                if cur.status in TERMINAL or cur.status in RESUMABLE_EXTRA:
                    final = await client.read_logs(row.root_run_id, after_id=last)
                    if not final:
                        return 0
                    continue
                await asyncio.sleep(0.3)

    _run(go())


def result(
    run_id: Annotated[str, typer.Argument()],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ends.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --wait: give up after this many seconds."),
    ] = None,
    database_url: DbOpt = None,
) -> None:
    """Print a run's output as JSON (exit 1 if it did not complete)."""
    if timeout is not None:
        timeout = _config.TIMEOUT.check(timeout)

    async def go() -> int:
        from .._console import visible

        async with await _connect_for_run(database_url, run_id) as client:
            if wait:
                try:
                    out = await client.result(run_id, timeout=timeout)
                except TimeoutError as exc:
                    _err(str(exc))
                    return 3
                _out(json.dumps(out, ensure_ascii=False))
                return 0
            view = await client.get((await client.live_row(run_id)).id)  # a chain: its end
            if view.status == RunStatus.COMPLETED:
                _out(json.dumps(view.output, ensure_ascii=False))
                return 0
            if view.status in TERMINAL or view.status == RunStatus.BLOCKED:
                err = view.error or {}
                _err(
                    f"run {view.run_id} {view.status}: {err.get('type', '')}: {visible(str(err.get('message', '')))}"
                )
                return 1
            _err(f"run {view.run_id} is {view.status}; use --wait to wait for it")
            return 3

    _run(go())


def workers(database_url: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List live workers: host, pid, heartbeat age, runs held, pipelines carried."""

    async def go() -> int:
        from .._client import AdminClient

        async with await AdminClient.open(database_url) as client:
            now = time.time()
            rows = await client.live_workers(now=now)
            held = await client.held_counts()
        items = [
            {
                "id": w.id,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "heartbeat_age": round(now - w.heartbeat_at, 1),
                "runs_held": held.get(w.id, 0),
                "pipelines": json.loads(w.pipelines),
                "concurrency": w.concurrency,
            }
            for w in rows
        ]
        if json_out:
            _out(json.dumps(items))
            return 0
        from rich.table import Table

        t = Table(box=None, header_style="bold")
        for c in ("WORKER", "KIND", "HOST", "PID", "HEARTBEAT", "RUNS", "PIPELINES"):
            t.add_column(c, no_wrap=True)
        for i in items:
            t.add_row(
                i["id"],
                i["kind"],
                i["host"],
                str(i["pid"]),
                f"{i['heartbeat_age']}s ago",
                str(i["runs_held"]),
                ", ".join(f"{n}@{v}" for n, v in i["pipelines"].items()),
            )
        _print_rich(t if items else "no live workers")
        return 0

    _run(go())
