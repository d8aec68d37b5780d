"""All rendering: live log lines, the `list` table, the `show` tree.

The engine emits plain records; this is the one place that turns them into text. Live lines are
written with plain ANSI codes (fast enough for 100,000 lines); tables and trees use rich.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zlib
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from . import _kinds as S
from ._kinds import COMPLETIONS, EventKind
from ._spans import fmt_span

# The console imports neither the engine nor the store: `durapipe show` and `list` render
# without them (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from ._engine import LogRecord

_PALETTE = [36, 32, 35, 34, 33, 96, 92, 95, 94, 93]  # ANSI foreground colours
_STREAM_STYLE = {"err": "31", "warn": "33", "error": "1;31", "info": "2"}
MIN_WIDTH = 20
FLUSH_SIZE = 256 * 1024  # characters of live output held before they are written


def prefix_colour(prefix: str) -> int:
    """Which colour of the palette a prefix gets: one per step, the same in every view."""
    return zlib.crc32(prefix.encode()) % len(_PALETTE)


def use_color(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


# C0 controls but tab and newline, DEL, C1 controls: a command's output holding them could move
# the cursor, retitle or rewrite the operator's terminal. Stored data keeps them as they were.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _hex(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def visible(text: str) -> str:
    """``text`` safe to write to a terminal: control characters shown as ``\\x1b`` (tabs and
    newlines stay as they are)."""
    return _CONTROL.sub(_hex, text)


_TS_CACHE: dict[int, str] = {}


def timestamp(at: float) -> str:
    """Local time with milliseconds: 2026-11-27T11:18:25.364."""
    sec = int(at)
    head = _TS_CACHE.get(sec)
    if head is None:
        if len(_TS_CACHE) > 1000:
            _TS_CACHE.clear()
        head = _TS_CACHE[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(sec))
    return f"{head}.{int((at - sec) * 1000):03d}"


class LineFormatter:
    """``2026-11-27T11:18:25.364 [deploy.exec_1       ] README.md`` with aligned prefixes."""

    def __init__(
        self, *, timestamps: bool = True, color: bool = False, width: int = MIN_WIDTH
    ) -> None:
        self.timestamps = timestamps
        self.color = color
        self.width = width

    def fit(self, prefixes: Iterable[str]) -> None:
        for p in prefixes:
            self.width = max(self.width, len(p))

    def format(self, *, prefix: str, line: str, stream: str, at: float) -> str:
        """The record as text; a record holding several lines (joined by ``\n``, as an exec's
        output is handed on a chunk at a time) gives each of them the same head."""
        return "".join(self.parts(prefix=prefix, line=line, stream=stream, at=at))

    def parts(self, *, prefix: str, line: str, stream: str, at: float) -> tuple[str, str, str]:
        """``format`` in three pieces, head + body + end, so 100,000 lines are copied once."""
        if len(prefix) > self.width:
            self.width = len(prefix)
        padded = prefix.ljust(self.width)
        ts = timestamp(at) + " " if self.timestamps else ""
        line = visible(line)
        if not self.color:
            head = f"{ts}[{padded}]{'!' if stream == 'err' else ' '}"
            return head, line.replace("\n", "\n" + head), ""
        colour = _PALETTE[prefix_colour(prefix)]
        mark = "\x1b[31m!\x1b[0m" if stream == "err" else " "
        head = f"\x1b[2m{ts}\x1b[0m[\x1b[{colour}m{padded}\x1b[0m]{mark}"
        style = _STREAM_STYLE.get(stream)
        if not style:
            return head, line.replace("\n", "\n" + head), ""
        head += f"\x1b[{style}m"
        return head, line.replace("\n", "\x1b[0m\n" + head), "\x1b[0m"


class LiveConsole:
    """Prints log records as they happen (``durapipe run``, ``resume``, ``worker --console``).

    On a terminal a status line at the bottom shows how long running commands have taken; a
    question for the person (``prompt``) takes that bottom line until it is answered, and log
    lines printed meanwhile go above it.
    """

    def __init__(
        self, *, timestamps: bool = True, stream: IO[str] | None = None, json_lines: bool = False
    ) -> None:
        self.stream = stream or sys.stdout
        self.json_lines = json_lines
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.fmt = LineFormatter(timestamps=timestamps, color=use_color(self.stream))
        self._status = ""
        self._prompt = ""
        self._pending: list[str] = []
        self._size = 0  # characters in _pending
        self._last_flush = 0.0

    def record(self, rec: LogRecord) -> None:
        """Print one record: a line, or many lines of an exec's output joined by ``\n``."""
        pending = self._pending
        bottom = self._bottom()
        if bottom:
            pending.append("\r\x1b[2K")
        if self.json_lines:
            doc = record_json(rec.__dict__)
            for line in rec.line.split("\n"):
                pending.append(json.dumps(doc | {"line": line}, ensure_ascii=False) + "\n")
            self._size += len(rec.line)
        else:
            head, body, end = self.fmt.parts(
                prefix=rec.prefix, line=rec.line, stream=rec.stream, at=rec.at
            )
            pending += (head, body, end + "\n")
            self._size += len(body)
        if bottom:
            pending.append(bottom)
        # A terminal sees every record at once; otherwise records go out in batches (at most
        # 0.1 s late: the runner ticks flush() too, and never more than FLUSH_SIZE held).
        now = time.monotonic()
        if self.tty or self._size > FLUSH_SIZE or now - self._last_flush > 0.1:
            self.flush(now)

    def status(self, text: str) -> None:
        """Replace the status line (terminals only)."""
        if not self.tty or self.json_lines or text == self._status:
            return
        self._status = text
        if self._prompt:  # the question keeps the bottom line; the status shows again after it
            return
        self._pending.append("\r\x1b[2K" + text)
        self.flush()

    def _bottom(self) -> str:
        """What the bottom line of a terminal shows: the question, else the status."""
        return (self._prompt or self._status) if self.tty else ""

    def prompt(self, text: str) -> None:
        """Ask the person at the terminal: ``text`` stays on the bottom line until ``answered``."""
        if self._bottom():
            self._pending.append("\r\x1b[2K")
        self._pending.append(text)
        self._prompt = text
        self.flush()

    def answered(self, *, typed: bool) -> None:
        """The question is done. ``typed``: the person's Enter ended its line, so the question
        and answer stay on screen; else (answered elsewhere) the question is taken away."""
        if not self._prompt:
            return
        self._prompt = ""
        if not self.tty:
            self._pending.append("" if typed else "\n")
        elif typed:
            self._pending.append(self._status)
        else:
            self._pending.append("\r\x1b[2K" + self._status)
        self.flush()

    def flush(self, now: float | None = None) -> None:
        if self._pending:
            self.stream.write("".join(self._pending))
            self._pending.clear()
            self._size = 0
        self.stream.flush()
        self._last_flush = time.monotonic() if now is None else now

    def close(self) -> None:
        if self._prompt:  # never answered: leave the question on screen, end its line
            self._prompt = ""
            self._pending.append("\n")
        self.status("")
        self.flush()


def running_status(procs: Iterable[Any], *, now: float) -> str:
    """``… build.exec_1 running for 12s`` for commands running longer than two seconds."""
    parts = [
        f"{p.prefix} running for {fmt_span(now - p.started)}" for p in procs if now - p.started >= 2
    ]
    return ("\x1b[2m… " + ", ".join(parts) + "\x1b[0m") if parts else ""


def record_json(r: Any) -> dict[str, Any]:
    def get(key: str) -> Any:
        return r.get(key) if isinstance(r, dict) else getattr(r, key, None)

    return {
        "at": get("at"),
        "time": timestamp(float(get("at") or 0)),
        "run_id": get("run_id"),
        "root_run_id": get("root_run_id"),
        "step": get("step"),
        "prefix": get("prefix"),
        "stream": get("stream"),
        "line": get("line"),
        "attempt": get("attempt"),
    }


# ---------------------------------------------------------------------- tables and trees

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "blocked": "bold red",
    "aborted": "red",
    "cancelled": "yellow",
    "stopped": "yellow",
    "running": "cyan",
    "sleeping": "blue",
    "waiting": "magenta",
    "pending": "white",
    "continued": "green",
    "timed_out": "red",
    "dead": "bold red",
    "queued": "white",
}


def _dur(row: Any, now: float) -> str:
    return _span(max(0.0, (row.finished_at or now) - row.created_at))


def _span(secs: float) -> str:
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    return fmt_span(secs)


IDLE = frozenset({"stopped", "blocked", "failed", "dead"})  # nothing runs until someone resumes it


def run_times(events: list[Any], *, status: str, now: float) -> tuple[float, float]:
    """-> (working, waited) seconds of a run, from its events in order (``kind, step, at``).

    Working time is the sum of its executions' spans: from a stop, failure or block until it
    runs again nothing counts, and while everything in flight is a wait (sleep, input, child)
    the time counts as waited. So a stopped, sleeping or waiting run's working time stays put.
    """
    working = waited = 0.0
    waits: set[Any] = set()  # steps waiting
    commands: set[Any] = set()  # commands running: the run works while they do
    ended = False  # after an execution ended, until the next event
    prev: float | None = None
    for ev in events:
        if prev is not None and not ended:
            span = max(0.0, ev.at - prev)
            if waits and not commands:
                waited += span
            else:
                working += span
        prev = ev.at
        kind = ev.kind
        ended = kind in S.RUN_ENDS
        if ended:
            commands.clear()  # an in-flight command died with its execution; waits go on
        elif kind == "step_started":
            commands.add(ev.step)
        elif kind in ("step_completed", "step_failed"):
            commands.discard(ev.step)
        elif kind in S.WAIT_STARTS:
            waits.add(ev.step)
        elif kind in S.WAIT_ENDS:
            waits.discard(ev.step)
    if prev is not None and not ended and status not in S.TERMINAL and status not in IDLE:
        span = max(0.0, now - prev)
        if status in ("sleeping", "waiting") or (waits and not commands):
            waited += span
        else:
            working += span
    return working, waited


def _run_dur(row: Any, events: list[Any] | None, now: float) -> str:
    if not events:
        return _dur(row, now)
    return _span(run_times(events, status=row.status, now=now)[0])


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_list(
    rows: list[Any],
    counts: dict[str, int],
    *,
    now: float,
    timelines: dict[str, list[Any]] | None = None,
    places: dict[str, tuple[str, int]] | None = None,
    count_cap: int | None = None,
) -> Any:
    """The runs table; DURATION is working time when ``timelines`` (Store.timelines) is given;
    a run waiting in a queue says where (``places``: Client.queue_places). A count above
    ``count_cap`` was capped there: it shows as ``10000+``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("RUN", "PIPELINE", "VERSION", "STATUS", "STARTED", "DURATION"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        table.add_row(
            ("  " * r.depth) + r.id,
            r.pipeline,
            r.version,
            Text(
                queued_place(*places[r.id]) if places and r.id in places else r.status,
                style=STATUS_STYLE.get(r.status, ""),
            ),
            started,
            _run_dur(r, (timelines or {}).get(r.id), now),
        )
    summary = Text(
        "  ".join(
            f"{s}: {count_cap}+" if count_cap is not None and n > count_cap else f"{s}: {n}"
            for s, n in sorted(counts.items())
        )
        or "no runs",
        style="dim",
    )
    return Group(table, summary)


ERRORED = frozenset(
    {"failed", "blocked", "aborted", "cancelled", "timed_out", "dead"}
)  # statuses an error explains
IN_FLIGHT = frozenset({"running", "waiting", "sleeping", "retrying"})
ACTIVE = frozenset({"pending", "running", "sleeping", "waiting"})
SHOWN_CHILDREN = 50  # per parent; `durapipe list --json` has them all


def _add_children(node: Any, parent_id: str, runs: list[Any]) -> None:
    """The run tree under ``parent_id``: ``runs`` are descendants at any depth."""
    from rich.text import Text

    by_parent: dict[str, list[Any]] = {}
    for r in sorted(runs, key=lambda r: (r.created_at, r.id)):
        by_parent.setdefault(r.parent_run_id, []).append(r)

    def add(node: Any, pid: str) -> None:
        kids = by_parent.get(pid, [])
        for kid in kids[:SHOWN_CHILDREN]:
            sub = node.add(
                Text.assemble(
                    "child  ",
                    (kid.id, "bold"),
                    f"  {kid.pipeline}  ",
                    (kid.status, STATUS_STYLE.get(kid.status, "")),
                )
            )
            add(sub, kid.id)
        if len(kids) > SHOWN_CHILDREN:
            node.add(
                Text(
                    f"… and {len(kids) - SHOWN_CHILDREN} more children "
                    f"(durapipe show {pid} --json lists them)",
                    style="dim",
                )
            )

    add(node, parent_id)


def render_show(
    run: Any,
    events: list[Any],
    *,
    children: list[Any],
    waits: list[str],
    now: float,
    note: str | None = None,
    links: list[str] | None = None,
) -> Any:
    from rich.console import Group
    from rich.text import Text
    from rich.tree import Tree

    working, waited = run_times(
        [e for e in events if e.kind in S.TIMELINE_KINDS], status=run.status, now=now
    )
    when = ""
    if waited >= 1:
        when += f"  (waited {fmt_span(waited)})"
    if run.status == "stopped":
        since = time.localtime(run.updated_at)
        fmt = "%H:%M:%S" if since[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M:%S"
        when += f"  stopped since {time.strftime(fmt, since)}"
    head = Text.assemble(
        (run.id, "bold"),
        "  ",
        (run.pipeline, "bold"),
        f" v{run.version}",
        "  ",
        (run.status, STATUS_STYLE.get(run.status, "")),
        f"  {_span(working) if events else _dur(run, now)}",
        (when, "dim"),
        ("  pinned" if run.pinned else ""),
    )
    tree = Tree(head)
    inputs = json.loads(run.inputs) if run.inputs else {}
    if inputs:
        tree.add(Text(f"inputs: {_short(inputs, 200)}", style="dim"))
    if getattr(run, "schedule", None) is not None:  # started by a schedule's tick
        tick = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.scheduled_at))
        tree.add(Text(f"schedule: {run.schedule}, tick {tick}", style="dim"))
    for link in links or []:
        tree.add(Text(link, style="dim"))
    for row in step_rows(run, events, now=now):
        tree.add(
            Text.assemble(
                f"{row['key']:>6}  ",
                (row["label"], "bold"),
                "  ",
                (row["state"], row["style"]),
                f"  {row['dur']}{row['tries']}",
                ("  → " + row["preview"] if row["preview"] else "", "dim"),
            )
        )
    _add_children(tree, run.id, children)
    parts: list[Any] = [tree]
    if run.output:
        parts.append(Text(f"output: {_short(json.loads(run.output), 400)}"))
    if run.error and run.status in ERRORED:
        err = json.loads(run.error)
        parts.append(Text(f"error: {err.get('type')}: {err.get('message')}", style="red"))
    for w in waits:
        parts.append(Text(w, style="magenta"))
    if note:
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


# What the last event of a call says of it: a word and its colour (`show`, the web UI).
_STEP_STATE = {
    "step_completed": ("done", "green"),
    "step_failed": ("failed", "red"),
    "timer_fired": ("done", "green"),
    "input_received": ("received", "green"),
    "input_timeout": ("timed out", "yellow"),
    "child_completed": ("done", "green"),
    "child_failed": ("failed", "red"),
    "value_recorded": ("done", "green"),
    "timer_started": ("sleeping", "blue"),
    "input_requested": ("waiting", "magenta"),
    "child_started": ("waiting", "magenta"),
    "step_started": ("running", "cyan"),
    "step_retry": ("retrying", "yellow"),
    # messages, published state, dp.first
    "message_sent": ("sent", "green"),
    "recv_started": ("waiting", "magenta"),
    "recv_received": ("received", "green"),
    "recv_timeout": ("timed out", "yellow"),
    "event_set": ("published", "green"),
    "first_started": ("waiting", "magenta"),
    # child handles, continue-as-new
    "child_spawned": ("started", "green"),
    "child_cancel_requested": ("cancel asked", "yellow"),
    "run_continued": ("continued", "green"),
    # durapipe edit
    "result_edited": ("edited", "yellow"),
}


def step_rows(
    run: Any, events: list[Any], *, now: float, limit: int | None = None
) -> list[dict[str, Any]]:
    """The steps of a run's history, in order, as ``show`` lists them (the web UI's timeline
    too): ``key``, ``label``, ``family``, ``state`` and its rich ``style``, ``start``, ``end``,
    ``dur`` (text), ``runs`` (how often its code ran), ``tries`` (text) and a result ``preview``;
    only the first ``limit`` steps when given."""
    steps: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    began: dict[int, float] = {}  # when each execution of the run (its attempt) wrote first
    for ev in events:
        began.setdefault(ev.attempt, ev.at)
        if ev.step is None:
            continue
        s = steps.get(ev.step)
        if s is None:
            s = steps[ev.step] = {
                "label": ev.label or ev.name or ev.step,
                "kind": ev.kind,
                "start": ev.at,
                "end": None,
                "starts": 0,  # a command's starts: one per execution of the run it ran in
                "retries": 0,
                "ends": 0,
                "attempt": ev.attempt,
                "data": None,
            }
            order.append(ev.step)
        s["last"] = ev.kind
        s.pop("discarded", None)
        if ev.kind == EventKind.RESULT_EDITED:
            _mark_edit(steps, ev, s)
            continue
        if ev.kind == "step_started":
            if s["starts"] or s["ends"]:  # started again: the step's time is its last try's
                s["start"], s["attempt"] = ev.at, ev.attempt
            s["starts"] += 1
        elif ev.kind in ("step_retry", "step_completed", "step_failed"):
            if ev.attempt != s["attempt"]:
                # Run again by a later execution of the run (a step records no start): its
                # time is from when that execution began, not from the first try.
                s["start"], s["attempt"] = began[ev.attempt], ev.attempt
            s["retries" if ev.kind == "step_retry" else "ends"] += 1
        if ev.kind in COMPLETIONS:
            s["end"] = ev.at
            s["data"] = ev.data
    rows: list[dict[str, Any]] = []
    for key in order[:limit]:
        s = steps[key]
        last = s["last"]
        state = _STEP_STATE.get(last) or (("done", "green") if last in COMPLETIONS else (last, ""))
        if state[0] in IN_FLIGHT and run.status not in ACTIVE:
            state = ("interrupted", "yellow")  # the run stopped or ended while this was in flight
        if s.get("discarded"):
            state = ("discarded by an edit", "dim")
        dur = f"{(s['end'] or now) - s['start']:.3f}s" if s["end"] else ""
        extra = ""
        if s["data"]:
            try:
                d = json.loads(s["data"])
            except ValueError:
                d = None
            if isinstance(d, dict):
                val = d.get("result", d.get("value", d.get("output", d.get("error"))))
                if isinstance(val, dict) and "exit_code" in val:
                    val = f"exit {val['exit_code']}"
                elif isinstance(val, dict) and "message" in val and "type" in val:
                    val = f"{val['type']}: {val['message']}"
                if val is not None:
                    extra = "  → " + _short(val)
        # How often the step's code ran: its retries (@dp.step(retries=...)), and its re-runs
        # when the run was continued (resume, or a worker taking over) with the step unfinished.
        runs = max(s["starts"], s["retries"] + s["ends"])
        again = runs - 1 - s["retries"]
        why = [f"{s['retries']} retr{'y' if s['retries'] == 1 else 'ies'}"] if s["retries"] else []
        if again > 0:
            why.append(f"{again} re-run{'' if again == 1 else 's'} after resume")
        tries = f"  ran {runs}× ({', '.join(why)})" if runs > 1 else ""
        rows.append(
            {
                "key": key,
                "label": s["label"],
                "family": s["kind"].split("_", 1)[0],
                "state": state[0],
                "style": state[1],
                "start": s["start"],
                "end": s["end"],
                "dur": dur,
                "runs": runs,
                "tries": tries,
                "preview": extra[4:],
            }
        )
    return rows


def open_waits(status: str, events: list[Any]) -> list[Any]:
    """The wait-starting events (a sleep, an input, a child, a message, a retry's delay) of a
    run that have not ended yet: every wait it is in (several under dp.gather). None once the
    run has ended."""
    if status in S.TERMINAL:
        return []
    open_: dict[Any, Any] = {}
    for e in events:
        if e.step is None:
            continue
        if e.kind in S.WAIT_STARTS or e.kind == EventKind.STEP_RETRY:
            open_[e.step] = e
        elif e.kind in S.WAIT_ENDS or (
            e.step in open_ and open_[e.step].kind == EventKind.STEP_RETRY
        ):  # (a retry's wait ends with the next try's start)
            open_.pop(e.step, None)
    return list(open_.values())


# ---------------------------------------------------------------- published state (dp.set_event)


def render_published(values: dict[str, Any]) -> Any:
    """``durapipe events`` and the end of ``durapipe show``: each published key and its value."""
    from rich.console import Group
    from rich.text import Text

    width = max((len(k) for k in values), default=0)
    lines = [Text("published:", style="bold")]
    lines += [Text(f"  {k:<{width}}  {_short(v, 400)}") for k, v in values.items()]
    return Group(*lines) if len(lines) > 1 else Text("no published state")


def _mark_edit(steps: dict[str, dict[str, Any]], ev: Any, s: dict[str, Any]) -> None:
    """An edit in `show`: the step shows its new value (the old one stays in the history);
    the calls after it that the edit runs again show as discarded until they run again."""
    d = json.loads(ev.data or "{}")
    s["data"] = json.dumps({"result": d.get("new")})
    s["end"] = s["end"] or ev.at
    if d.get("rerun_after"):
        from ._engine.repair import before

        for key, other in steps.items():
            if key != ev.step and before(ev.step, key):
                other["discarded"] = True


def fork_link_json(link: Any, run_id: str | None) -> dict[str, Any] | None:
    """A fork link as `show --json` prints it: the other run, the fork point, who, when."""
    if link is None or run_id is None:
        return None
    return {"run_id": run_id, "step": link.step, "by": link.created_by, "at": link.created_at}


def fork_lines(source: Any, forks: list[Any]) -> list[str]:
    """`show`'s lines about forks: where the run came from, and the runs forked from it."""
    out = []
    if source is not None:
        out.append(
            f"forked from {source.source_run_id} at step {source.step} by {source.created_by}"
        )
    for f in forks:
        out.append(f"forked as {f.run_id} from step {f.step} by {f.created_by}")
    return out


def render_schedules(views: list[Any], *, now: float) -> Any:
    """``durapipe schedule list``: each schedule, its next tick, and its last run."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("SCHEDULE", "PIPELINE", "WHEN", "NEXT", "LAST RUN", "STATUS", "POLICY"):
        table.add_column(col, no_wrap=True)

    def at(t: float | None) -> str:
        if t is None:
            return "-"
        same_day = time.localtime(t)[:3] == time.localtime(now)[:3]
        return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(t))

    for v in views:
        if v.paused:
            nxt = Text("paused", style="yellow")
        elif v.overlap == "queue" and v.next_fire_at <= now and v.last_status in ACTIVE:
            nxt = Text("when last run ends", style="yellow")  # its tick waits (overlap queue)
        else:
            nxt = Text(at(v.next_fire_at))
        status = v.last_status or "-"
        policy = f"overlap {v.overlap}, catch-up {v.catch_up}"
        if v.skipped:
            policy += f", {v.skipped} skipped"
        table.add_row(
            v.name,
            v.pipeline,
            v.description,
            nxt,
            v.last_run_id or "-",
            Text(status, style=STATUS_STYLE.get(status, "")),
            Text(policy, style="dim"),
        )
    return table


def render_queues(views: list[Any], *, now: float) -> Any:
    """The queues table (``durapipe queues``): waiting, holding a slot, limits, oldest wait."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("QUEUE", "WAITING", "RUNNING", "CONCURRENCY", "PER KEY", "RATE", "OLDEST WAITING"):
        table.add_column(col, no_wrap=True)
    for v in views:
        rate = "-"
        if v.rate is not None:
            n, window = v.rate
            rate = f"{n}/{fmt_span(window)}"
            if v.taken_in_window is not None:
                rate += f" ({v.taken_in_window} in window)"
        oldest = "-" if v.oldest_waiting_at is None else fmt_span(now - v.oldest_waiting_at)
        table.add_row(
            v.name + ("  (priority)" if v.priority else ""),
            str(v.depth),
            str(v.running),
            "-" if v.concurrency is None else str(v.concurrency),
            "-" if v.key_concurrency is None else str(v.key_concurrency),
            rate,
            oldest if oldest == "-" else f"{oldest} ago",
        )
    return table


def queued_place(queue: str, ahead: int) -> str:
    """Where a run waits in its queue, as ``list`` and ``show`` say it."""
    return f"queued in {queue} ({ahead} ahead)"
