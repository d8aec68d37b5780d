"""The web UI's pages and actions: Starlette endpoints over the AdminClient, Jinja2 templates.

Another client, like the CLI: every read and every action goes through :class:`AdminClient`
(no SQL here). Pages are rendered on the server; ``static/ui.js`` only refreshes parts of them
and streams the log (server-sent events).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from .. import _serde
from .._client import AdminClient, RunView
from .._console import (
    STATUS_STYLE,
    LineFormatter,
    _run_dur,
    open_waits,
    prefix_colour,
    step_rows,
    timestamp,
)
from .._engine.repair import EDITABLE, completion
from .._engine.tags import parse_tags
from .._kinds import (
    ACTIVE,
    ALL_STATUSES,
    ENDED,
    RESUMABLE_EXTRA,
    TERMINAL,
    EventKind,
    RunStatus,
)
from .._repair import EDITABLE_STATUSES
from ..errors import DurapipeError, InvalidInput, RunNotFound, SerializationError
from .guard import Guard, check_csrf

HERE = Path(__file__).parent
PAGE = 50  # runs per page
POLL = 0.1  # seconds between looks for new log lines of a live run
SHOWN_STEPS = 1000  # steps a run page lists before "show all"

# The navigation bar. Hook: schedules and queues pages add their (path, title) here.
NAV: list[tuple[str, str]] = [("/runs", "Runs"), ("/workers", "Workers")]


@dataclass(frozen=True, kw_only=True)
class Field:
    """A value an action asks for on its confirmation page (a form field)."""

    name: str
    label: str
    kind: str = "text"  # text, textarea, checkbox (its value is "1" when checked)
    required: bool = False
    placeholder: str = ""
    help: str = ""


@dataclass(frozen=True, kw_only=True)
class Action:
    """A button on a run page: shown when ``shown(run)``, asks ``confirm`` first (and its
    ``fields``), then ``perform(client, run_id, by, fields)`` through the Client and says
    ``done``. ``button``: a button in the run's head (False: its form is elsewhere on the
    page). ``opens``: perform returns a run id, whose page is shown next (a fork)."""

    title: str
    confirm: str
    danger: bool
    shown: Callable[[Any], bool]
    perform: Callable[[AdminClient, str, str, dict[str, str]], Awaitable[Any]]
    done: str
    fields: tuple[Field, ...] = ()
    button: bool = True
    opens: bool = False


def _stoppable(run: Any) -> bool:
    return run.status in ACTIVE and run.requested != "cancel"


def _held(run: Any) -> bool:
    """A live process holds the run (fork and edit refuse it: stop it first)."""
    return run.lease_owner is not None and (run.lease_expires_at or 0) >= time.time()


def _forkable(run: Any) -> bool:
    return run.parent_run_id is None and not _held(run)


def _editable(run: Any) -> bool:
    return run.status in EDITABLE_STATUSES and not _held(run)


def _json_field(fields: dict[str, str], name: str, what: str) -> Any:
    text = fields.get(name, "").strip()
    if not text:
        raise InvalidInput(f'{what}: give a JSON value (a string is written in quotes: "text")')
    try:
        return _serde.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"{what} is not valid JSON ({exc.args[0] if exc.args else exc}); a string is "
            'written in quotes: "text"'
        ) from None
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply to be read as JSON") from None


def _new_inputs(fields: dict[str, str]) -> dict[str, Any] | None:
    if not fields.get("inputs", "").strip():
        return None
    value = _json_field(fields, "inputs", "new inputs")
    if not isinstance(value, dict):
        raise InvalidInput('new inputs are a JSON object of input names to values, e.g. {"n": 3}')
    return value


async def _send(c: AdminClient, rid: str, by: str, f: dict[str, str]) -> None:
    topic = f.get("topic", "").strip()
    try:
        value = _serde.parse_cli_value(f.get("value", ""))
    except SerializationError as exc:
        raise InvalidInput(f"message {topic!r}: {exc}") from None
    await c.send(rid, topic, value, by=by)


async def _fork(c: AdminClient, rid: str, by: str, f: dict[str, str]) -> str:
    step = f.get("step", "").strip() or None
    return await c.fork(rid, from_step=step, inputs=_new_inputs(f), by=by)


async def _edit(c: AdminClient, rid: str, by: str, f: dict[str, str]) -> None:
    step = f.get("step", "").strip()
    if not step:
        raise InvalidInput("give the step whose result is edited (a key such as 3, or a name)")
    value = _json_field(f, "result", "the new result")
    reason = f.get("reason", "").strip()
    if not reason:
        raise InvalidInput("give a reason: why the result is edited (it is kept with the edit)")
    await c.edit(rid, step, value, reason=reason, by=by, rerun_after=f.get("keep_after") != "1")


# The run page shows every action whose `shown` says so (schedules and queues add theirs here).
ACTIONS: dict[str, Action] = {
    "stop": Action(
        title="Stop",
        confirm="It stops at its next journaled call; Resume continues it later.",
        danger=False,
        shown=_stoppable,
        perform=lambda c, rid, by, f: c.stop(rid, by=by),
        done="stop",
    ),
    "resume": Action(
        title="Resume",
        confirm="A worker that carries its pipeline continues it from its history.",
        danger=False,
        shown=lambda run: run.status in (*RESUMABLE_EXTRA, RunStatus.FAILED),
        perform=lambda c, rid, by, f: c.resume(rid, by=by),
        done="resume",
    ),
    "cancel": Action(
        title="Cancel",
        confirm="Cancellation is raised at its current await: its finally blocks run, its "
        "children are cancelled, and it ends cancelled. This cannot be undone.",
        danger=True,
        shown=lambda run: run.status not in TERMINAL,
        perform=lambda c, rid, by, f: c.cancel(rid, here=False, by=by),
        done="cancel",
    ),
    # Messages, fork and edit (issue #20): each asks its values on the confirmation page.
    "send": Action(
        title="Send a message",
        confirm="The run takes it with dp.recv(TOPIC), now or when it gets there; messages of "
        "one topic are taken in the order they were sent.",
        danger=False,
        # Not to a run that will never take it: ended, timed out, or continued as new (its
        # page links the run that carries on).
        shown=lambda run: run.status not in (*ENDED, RunStatus.CONTINUED, RunStatus.TIMED_OUT),
        perform=_send,
        done="send",
        fields=(
            Field(name="topic", label="Topic", required=True, placeholder="as in dp.recv(TOPIC)"),
            Field(
                name="value",
                label="Value",
                kind="textarea",
                placeholder='JSON when it parses (true, 3, {"a": 1}), else text',
            ),
        ),
        button=False,
    ),
    "fork": Action(
        title="Fork from the failed step",
        confirm="A new run starts with a copy of this run's history before the step; a worker "
        "runs the step and what follows with the pipeline's current code. This run is not "
        "changed.",
        danger=False,
        shown=lambda run: _forkable(run) and run.status == RunStatus.FAILED,
        perform=_fork,
        done="fork",
        fields=(
            Field(
                name="step",
                label="From step",
                placeholder="the failed step",
                help="A key (3, 5/1/2) or a name (build_1); 1 starts over.",
            ),
            Field(
                name="inputs",
                label="New inputs",
                kind="textarea",
                placeholder='optional: {"n": 3} replaces these inputs, keeps the others',
            ),
        ),
        opens=True,
    ),
    "edit": Action(
        title="Edit a result",
        confirm="The new result supersedes the recorded one (which is kept in the history with "
        "your reason); Resume then continues the run with it.",
        danger=False,
        shown=_editable,
        perform=_edit,
        done="edit",
        fields=(
            Field(name="step", label="Step", required=True),
            Field(name="result", label="New result (JSON)", kind="textarea", required=True),
            Field(name="reason", label="Reason", required=True, placeholder="why it is edited"),
            Field(
                name="keep_after",
                label="Keep the results recorded after it (default: those calls run again)",
                kind="checkbox",
            ),
        ),
        button=False,
    ),
}


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _status_class(status: str) -> str:
    return "st-" + status if status in STATUS_STYLE else "st-other"


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    t.env.filters["when"] = _when
    t.env.filters["pretty"] = _json
    t.env.globals["status_class"] = _status_class
    t.env.globals["nav"] = NAV
    return t


class UI:
    """The endpoints, sharing one client, one template set and this process's CSRF token."""

    def __init__(self, client: AdminClient) -> None:
        self.client = client
        self.templates = _templates()
        self.csrf = secrets.token_urlsafe(24)

    def page(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        context = {"csrf": self.csrf, "path": request.url.path, **context}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def error(self, request: Request, message: str, status: int) -> Response:
        return self.page(request, "error.html", {"message": message}, status)

    # ------------------------------------------------------------------ runs

    async def runs(self, request: Request) -> Response:
        q = request.query_params
        status = q.get("status") or None
        pipeline = q.get("pipeline") or None
        roots = q.get("roots") in ("1", "on", "true")
        try:
            if status is not None and status not in ALL_STATUSES:
                raise InvalidInput(f"unknown status {status!r}; one of: {', '.join(ALL_STATUSES)}")
            since = _instant(q.get("since"), "since")
            until = _instant(q.get("until"), "until")
            before = _cursor(q.get("before"))
            # Tags: `key=value`, several (space- or comma-separated, or repeated) AND together.
            tag_text = " ".join(" ".join(q.getlist("tag")).replace(",", " ").split())
            tags = parse_tags(tag_text.split(), option="tag")
        except InvalidInput as exc:
            return self.error(request, str(exc), 400)
        if q.get("counts"):
            # The counts by status: a scan of every run, so fetched after the page, apart.
            counts = await self.client.counts(pipeline=pipeline, roots_only=roots, tags=tags)
            html = self.templates.get_template("_runs_counts.html").render(
                {
                    "counts": sorted(counts.items()),
                    "total": sum(counts.values()),
                    "pipeline": pipeline or "",
                    "tag": tag_text,
                }
            )
            return HTMLResponse(html)
        rows = await self.client.page(
            status=status,
            pipeline=pipeline,
            roots_only=roots,
            since=since,
            until=until,
            before=before,
            limit=PAGE + 1,
            tags=tags,
        )
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        now = time.time()
        timelines = await self.client.timelines([r.id for r in rows])
        tagged = await self.client.tags_of([r.id for r in rows])
        items = [
            {
                "id": r.id,
                "pipeline": r.pipeline,
                "version": r.version,
                "status": r.status,
                "child": r.parent_run_id is not None,
                "started": _when(r.created_at),
                "duration": _run_dur(r, timelines.get(r.id), now),
                "tags": sorted(tagged.get(r.id, {}).items()),
            }
            for r in rows
        ]
        filters = {
            "status": status or "",
            "pipeline": pipeline or "",
            "roots": roots,
            "since": q.get("since") or "",
            "until": q.get("until") or "",
            "tag": tag_text,
        }
        keep = {k: v for k, v in filters.items() if v}
        nxt = None
        if more and rows:
            nxt = _query({**keep, "before": f"{rows[-1].created_at!r}~{rows[-1].id}"})
        context = {
            "runs": items,
            "counts_src": "/runs" + _query({**keep, "counts": "1"}),
            "filters": filters,
            "statuses": list(ALL_STATUSES),
            "next": nxt,
            "first": _query(keep),
            "paged": before is not None,
        }
        if q.get("partial"):
            html = self.templates.get_template("_runs_table.html").render(context)
            return HTMLResponse(html)
        return self.page(request, "runs.html", context)

    # ------------------------------------------------------------------ one run

    async def run_context(self, request: Request, run_id: str) -> dict[str, Any]:
        client = self.client
        row = await client.row(run_id)
        view = RunView.of(row)
        events = await client.history(run_id)
        # What a live page has already: while this stays the same, nothing is rendered again.
        key = f"{row.status}|{row.requested}|{row.attempt}|{len(events)}|{row.updated_at!r}"
        q = request.query_params
        if q.get("partial") and q.get("key") == key:
            return {"key": key, "live": row.status not in TERMINAL}
        now = time.time()
        all_steps = request.query_params.get("steps") == "all"
        shown = step_rows(row, events, now=now, limit=None if all_steps else SHOWN_STEPS)
        total = len({e.step for e in events if e.step is not None})
        tree = await client.tree(row.root_run_id)
        waits = []
        for e in open_waits(row.status, events):
            data = _serde.loads(e.data) if e.data else {}
            if e.kind == EventKind.INPUT_REQUESTED:
                waits.append(
                    {
                        "kind": "input",
                        "name": e.name,
                        "prompt": data.get("prompt"),
                        "deadline": _when(data.get("deadline")),
                    }
                )
            elif e.kind == EventKind.CHILD_STARTED:
                waits.append({"kind": "child", "child": data.get("child_run_id")})
            elif e.kind == EventKind.RECV_STARTED:
                waits.append(
                    {"kind": "message", "topic": e.name, "deadline": _when(data.get("deadline"))}
                )
            elif e.kind == EventKind.FIRST_STARTED:
                waits.append({"kind": "first", "name": e.label or e.name})
            elif e.kind == EventKind.STEP_RETRY:
                waits.append(
                    {
                        "kind": "retry",
                        "name": e.label or e.name,
                        "until": _when(data.get("retry_at")),
                    }
                )
            else:
                waits.append({"kind": "timer", "until": _when(data.get("wake_at"))})
        actions = [
            {"name": name, "title": a.title, "danger": a.danger}
            for name, a in ACTIONS.items()
            if a.button and a.shown(row)
        ]
        # Fork and edit from a step of the history: the buttons on its rows.
        repair = {"fork": _forkable(row), "edit": ACTIONS["edit"].shown(row)}
        begin = events[0].at if events else row.created_at
        end = row.finished_at or (events[-1].at if events and row.status in TERMINAL else now)
        view = RunView.of(row, (await client.tags_of([row.id])).get(row.id))
        source, forks = await client.fork_links(run_id)
        return {
            "run": view,
            "row": row,
            "steps": shown,
            "step_html": _step_rows_html(shown, begin=begin, end=end, repair=repair),
            "repair": repair,
            "tags": sorted(view.tags.items()),
            "successor": await client.successor(row),
            "forked_from": source,
            "forks": forks,
            "published": sorted((await client.published(run_id)).items()),
            "can_send": ACTIONS["send"].shown(row),
            "hidden_steps": total - len(shown),
            "tree": _tree(tree, row.root_run_id),
            "waits": waits,
            "actions": actions,
            "live": row.status not in TERMINAL,
            "duration": _run_dur(row, events, now),
            "created": _when(view.created_at),
            "finished": _when(view.finished_at),
            "requested": row.requested,
            "key": key,
        }

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            context = await self.run_context(request, run_id)
        except RunNotFound as exc:
            return self.error(request, str(exc), 404)
        if "run" not in context:  # unchanged since the page's last look
            return JSONResponse({"same": True, "key": context["key"], "live": context["live"]})
        # The parts ui.js refreshes, each with a signature: a part whose signature did not change
        # is left alone (an answer being typed in a form stays).
        parts = {}
        for part in ("head", "waits", "steps", "tree", "published", "message"):
            html = self.templates.get_template(f"_run_{part}.html").render(
                {"csrf": self.csrf, **context}
            )
            parts[part] = {"html": html, "sig": hashlib.sha1(html.encode()).hexdigest()[:16]}
        if request.query_params.get("partial"):
            return JSONResponse({"parts": parts, "key": context["key"], "live": context["live"]})
        context["parts"] = parts
        done = request.query_params.get("done") or ""
        context["message"] = _DONE.get(done)
        link = context["forked_from"]
        if done == "fork" and link is not None:  # said from the link, not from the URL
            context["message"] = f"Forked from run {link.source_run_id} at step {link.step}."
        return self.page(request, "run.html", context)

    async def act(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        name = request.path_params["action"]
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        if not check_csrf(request, fields.get("csrf"), self.csrf):
            return self.error(
                request, "this form is stale or came from another site: reload the page", 403
            )
        by = f"ui:{request.client.host if request.client else 'unknown'}"
        try:
            await self.client.row(run_id)
            if name == "input":
                input_name = fields.get("name", "")
                text = fields.get("value", "")
                try:
                    value = _serde.parse_cli_value(text)
                except SerializationError as exc:
                    raise InvalidInput(f"input {input_name}: {exc}") from None
                if fields.get("confirm") != "yes":
                    return self.page(
                        request,
                        "confirm.html",
                        {
                            "run_id": run_id,
                            "action": "input",
                            "title": f"Send '{input_name}'",
                            "text": f"Send {_short(value)} as input '{input_name}'?",
                            "danger": False,
                            "fields": {"name": input_name, "value": text},
                        },
                    )
                await self.client.send_input(run_id, input_name, value, by=by)
                return RedirectResponse(f"/runs/{run_id}?done=input", status_code=303)
            action = ACTIONS.get(name)
            if action is None:
                return self.error(request, f"there is no action {name!r}", 404)
            asked = {f.name: fields.get(f.name, "") for f in action.fields}
            if fields.get("confirm") != "yes":
                return self.confirm(
                    request, run_id, name, action, await self._prefill(run_id, name, asked)
                )
            try:
                done = await action.perform(self.client, run_id, by, asked)
            except (InvalidInput, SerializationError) as exc:
                if not action.fields:
                    raise
                # Asked again, with what was typed and what was wrong with it.
                return self.confirm(request, run_id, name, action, asked, str(exc), 400)
        except RunNotFound as exc:
            return self.error(request, str(exc), 404)
        except (InvalidInput, SerializationError) as exc:
            return self.error(request, str(exc), 400)
        except DurapipeError as exc:
            return self.error(request, str(exc), 409)
        if action.opens:
            return RedirectResponse(f"/runs/{done}?done={action.done}", status_code=303)
        return RedirectResponse(f"/runs/{run_id}?done={action.done}", status_code=303)

    def confirm(
        self,
        request: Request,
        run_id: str,
        name: str,
        action: Action,
        values: dict[str, str],
        problem: str | None = None,
        status: int = 200,
    ) -> Response:
        """An action's confirmation page: what it does, its fields, Yes / No."""
        titles = {
            "send": f"Send a message to run {run_id}",
            "edit": f"Edit a result of run {run_id}",
            "fork": f"Fork run {run_id} from "
            + (f"step {values['step']}?" if values.get("step") else "the failed step?"),
        }
        title = titles.get(name, f"{action.title} run {run_id}?")
        return self.page(
            request,
            "confirm.html",
            {
                "run_id": run_id,
                "action": name,
                "title": title,
                "text": action.confirm,
                "danger": action.danger,
                "fields": {},
                "asked": [(f, values.get(f.name, "")) for f in action.fields],
                "problem": problem,
            },
            status,
        )

    async def _prefill(self, run_id: str, name: str, values: dict[str, str]) -> dict[str, str]:
        """An edit starts from the step's recorded result (as the history has it now), a fork
        from the run's inputs."""
        if name == "fork" and not values.get("inputs"):
            inputs = _serde.loads((await self.client.row(run_id)).inputs)
            return {**values, "inputs": _json(inputs)} if inputs else values
        step = values.get("step", "")
        if name != "edit" or not step or values.get("result"):
            return values
        evs = [e for e in await self.client.history(run_id) if e.step == step]
        done = completion(evs)
        data = _serde.loads(done.data) if done is not None and done.data else None
        if isinstance(data, dict):
            field = next((k for k in ("result", "value", "output") if k in data), None)
            if field is not None:
                return {**values, "result": _json(data[field])}
        return values

    async def logs(self, request: Request) -> Response:
        """The log of the run's tree (a child's own part of it) as server-sent events."""
        run_id = request.path_params["run_id"]
        try:
            row = await self.client.row(run_id)
        except RunNotFound as exc:
            return self.error(request, str(exc), 404)
        try:
            last = int(request.headers.get("last-event-id") or 0)
        except ValueError:
            last = 0
        return StreamingResponse(
            self._log_events(request, row, last),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _log_events(self, request: Request, row: Any, last: int) -> AsyncIterator[str]:
        client = self.client
        mine = row.prefix + "."
        fmt = LineFormatter(timestamps=False, color=False)
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            batch = await client.read_logs(row.root_run_id, after_id=last)
            if batch:
                shown = [
                    r
                    for r in batch
                    if row.parent_run_id is None
                    or r.prefix == row.prefix
                    or r.prefix.startswith(mine)
                ]
                fmt.fit(r.prefix for r in shown)
                lines = []
                for r in shown:
                    head, body, _ = fmt.parts(
                        prefix=r.prefix, line=r.line, stream=r.stream, at=r.at
                    )
                    lines.append(
                        {
                            "t": timestamp(r.at),
                            "h": head,
                            "c": prefix_colour(r.prefix),
                            "s": r.stream,
                            "l": body,
                        }
                    )
                last = batch[-1].id
                yield f"id: {last}\ndata: {json.dumps(lines, ensure_ascii=False)}\n\n"
                continue
            status = (await client.row(row.id)).status
            if status in TERMINAL:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(POLL if status not in (*RESUMABLE_EXTRA, "failed") else 1.0)

    # ------------------------------------------------------------------ workers

    async def workers(self, request: Request) -> Response:
        now = time.time()
        rows = await self.client.live_workers(now=now)
        held = await self.client.held_counts()
        holds = await self.client.holds()
        items = [
            {
                "id": w.id,
                "kind": w.kind,
                "host": w.host,
                "pid": w.pid,
                "age": f"{now - w.heartbeat_at:.1f}s ago",
                "started": _when(w.started_at),
                "runs": held.get(w.id, 0),
                "concurrency": w.concurrency,
                "pipelines": sorted(json.loads(w.pipelines).items()),
            }
            for w in rows
        ]
        context = {
            "workers": items,
            "holds": [(h.pipeline, h.version or "every version") for h in holds],
        }
        return self.page(request, "workers.html", context)


_DONE = {
    "input": "Input sent.",
    "stop": "Stop requested.",
    "resume": "Resumed: a worker continues it.",
    "cancel": "Cancel requested.",
    "send": "Message sent.",
    "fork": "Forked.",
    "edit": "Result edited: Resume continues the run with it.",
}


def _step_rows_html(
    steps: list[dict[str, Any]],
    *,
    begin: float,
    end: float,
    repair: dict[str, bool] | None = None,
) -> Markup:
    """The history's table rows. Built here rather than in a template loop: a run of 10,000
    steps renders several times faster, and every value is escaped all the same. Each row has a
    bar on the run's time axis (``begin``..``end``): an SVG, as the page allows no inline style.
    ``repair``: which of fork and edit each row offers (buttons of the forms the steps part
    holds once, ``f-fork`` and ``f-edit``)."""
    span = max(end - begin, 1e-6)
    fork = bool(repair and repair.get("fork"))
    edit = bool(repair and repair.get("edit"))
    out = []
    for s in steps:
        x = min(1000.0, max(0.0, (s["start"] - begin) / span * 1000))
        w = max(2.0, min(1000.0 - x, ((s["end"] or end) - s["start"]) / span * 1000))
        bar = (
            f'<svg class="bar" viewBox="0 0 1000 10" preserveAspectRatio="none">'
            f'<rect x="{x:.1f}" width="{w:.1f}" height="10" rx="2"/></svg>'
        )
        runs = ""
        if s["family"] == "step":
            runs = str(s["runs"])
            if s["tries"]:
                runs += f'<span class="muted" title="{escape(s["tries"].strip())}"> ↻</span>'
        style = (s["style"] or "plain").replace(" ", "-")
        row = (
            f'<tr class="fam-{escape(s["family"])}"><td class="num mono muted">{escape(s["key"])}</td>'
            f'<td class="mono"><b>{escape(s["label"])}</b></td>'
            f'<td><span class="kind">{escape(s["family"])}</span></td>'
            f'<td><span class="state sty-{escape(style)}">{escape(s["state"])}</span></td>'
            f'<td class="num">{runs}</td><td class="num mono">{escape(s["dur"])}</td>'
            f'<td class="timeline">{bar}</td>'
            f'<td class="mono preview">{escape(s["preview"])}</td>'
        )
        if fork or edit:
            key = escape(s["key"])
            buttons = ""
            if fork:
                buttons += (
                    f'<button class="btn tiny" form="f-fork" name="step" value="{key}" '
                    f'id="fork-{key}">Fork here</button>'
                )
            if edit and s["family"] in EDITABLE:
                buttons += (
                    f'<button class="btn tiny" form="f-edit" name="step" value="{key}" '
                    f'id="edit-{key}">Edit</button>'
                )
            row += f'<td class="repair">{buttons}</td>'
        out.append(row + "</tr>\n")
    return Markup("".join(out))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _query(params: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return "?" + urlencode({k: ("1" if v is True else v) for k, v in params.items()})


def _instant(text: str | None, what: str) -> float | None:
    """A time filter: ``2026-11-30T14:05`` (local time, as the page shows times) or a date."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not a time; give e.g. 2026-11-30 or 2026-11-30T14:05"
        ) from None
    if value.tzinfo is None:
        value = value.astimezone()  # local time
    return value.timestamp()


def _cursor(text: str | None) -> tuple[float, str] | None:
    """The keyset of a page: ``created_at~run_id`` of the last run of the page before."""
    if not text:
        return None
    at, sep, rid = text.partition("~")
    try:
        if not sep or not rid:
            raise ValueError
        return float(at), rid
    except ValueError:
        raise InvalidInput(
            f"page cursor {text!r} is not usable; start from the first page"
        ) from None


def _tree(runs: list[Any], root: str) -> list[dict[str, Any]]:
    """The run tree, depth first, as (depth, run) rows for the template."""
    by_parent: dict[str | None, list[Any]] = {}
    for r in sorted(runs, key=lambda r: (r.created_at, r.id)):
        by_parent.setdefault(r.parent_run_id, []).append(r)
    out: list[dict[str, Any]] = []

    def add(rid: str, depth: int) -> None:
        for kid in by_parent.get(rid, []):
            out.append(
                {
                    "depth": min(depth, 8),
                    "id": kid.id,
                    "pipeline": kid.pipeline,
                    "status": kid.status,
                }
            )
            add(kid.id, depth + 1)

    top = [r for r in runs if r.id == root]
    for r in top:
        out.append({"depth": 0, "id": r.id, "pipeline": r.pipeline, "status": r.status})
        add(r.id, 1)
    return out if len(out) > 1 else []


def create_app(client: AdminClient, *, token: str | None = None) -> ASGIApp:
    """The UI as an ASGI app on ``client`` (it stays open; the caller closes it).

    With ``token``, every request must carry it: an ``Authorization: Bearer`` header, or the
    cookie set when a browser opens any page once with ``?token=...``.
    """
    ui = UI(client)

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=302)

    routes = [
        Route("/", home),
        Route("/runs", ui.runs),
        Route("/runs/{run_id}", ui.run),
        Route("/runs/{run_id}/logs", ui.logs),
        Route("/runs/{run_id}/act/{action}", ui.act, methods=["POST"]),
        Route("/workers", ui.workers),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.ui = ui
    return Guard(app, token=token)
