"""`durapipe upgrade check`: replay open runs against new code, with no side effects."""

from __future__ import annotations

import asyncio
import contextvars
import math
from dataclasses import asdict, dataclass
from typing import Any

from . import _serde
from ._clock import SYSTEM_CLOCK
from ._definition import PipelineDef
from ._engine import _BRANCH, _CTX, Branch, LogRecord, ReplayFrontier, RunContext
from ._store import Store
from ._store import schema as S
from .errors import NonDeterminismError

OPEN = (*S.ACTIVE, "stopped", "blocked", "failed")  # failed runs can be resumed too


@dataclass(frozen=True, kw_only=True)
class Verdict:
    run_id: str
    pipeline: str
    recorded_version: str
    current_version: str
    status: str
    verdict: str  # compatible | nondeterministic | would_abort
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _DryHost:
    """Stands in for a runner; a dry replay stops before anything could reach it."""

    clock = SYSTEM_CLOCK
    journal: Any = None
    suspend_after = math.inf
    poll_interval = 1.0

    def emit(self, rec: LogRecord) -> None:
        pass

    def child_created(self, ctx: RunContext, child_id: str) -> None:
        raise AssertionError("dry replay must not start children")

    def input_waiting(self, ctx: RunContext, name: str, prompt: str | None, waiting: bool) -> None:
        pass

    async def fetch_input(self, run_id: str, name: str) -> tuple[int, Any] | None:
        return None

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        return None


async def check_run(store: Store, row: Any, pdef: PipelineDef) -> Verdict:
    base = {
        "run_id": row.id,
        "pipeline": row.pipeline,
        "recorded_version": row.version,
        "current_version": pdef.version,
        "status": row.status,
    }
    if row.pinned and row.version != pdef.version:
        return Verdict(
            **base,
            verdict="would_abort",
            detail=f"pinned to version {row.version!r}; the code is version {pdef.version!r}",
        )
    history = await store.events(row.id)
    ctx = RunContext(host=_DryHost(), row=row, history=history, owner="dry-replay", dry=True)
    root = Branch("", None)
    cv = contextvars.copy_context()
    cv.run(_CTX.set, ctx)
    cv.run(_BRANCH.set, root)
    task = asyncio.get_running_loop().create_task(
        pdef.fn(**(_serde.loads(row.inputs) or {})), context=cv
    )
    root.task = task
    ctx.task = task
    try:
        await task
    except ReplayFrontier as stop:
        return Verdict(
            **base,
            verdict="compatible",
            detail=f"replays all {len(ctx.records)} recorded calls; continues live at step {stop.args[0]}",
        )
    except NonDeterminismError as exc:
        return Verdict(
            **base,
            verdict="nondeterministic",
            detail=f"at step {exc.step}: recorded {exc.recorded}, the code now does {exc.now}",
        )
    except Exception as exc:
        if ctx.fatal is not None:
            f = ctx.fatal
            return Verdict(
                **base,
                verdict="nondeterministic",
                detail=f"at step {f.step}: recorded {f.recorded}, the code now does {f.now}",
            )
        return Verdict(
            **base,
            verdict="compatible",
            detail=f"replays its history; then raises {type(exc).__name__}: {exc}",
        )
    if ctx.fatal is not None:
        f = ctx.fatal
        return Verdict(
            **base,
            verdict="nondeterministic",
            detail=f"at step {f.step}: recorded {f.recorded}, the code now does {f.now}",
        )
    left = ctx.unvisited()
    if left:
        first = ctx.records[left[0]][0]
        return Verdict(
            **base,
            verdict="nondeterministic",
            detail=f"at step {left[0]}: recorded {first.kind.split('_')[0]} {first.name!r}, the code now returns before reaching it",
        )
    return Verdict(**base, verdict="compatible", detail="replays its whole history and completes")


async def upgrade_check(store: Store, pipelines: list[PipelineDef]) -> list[Verdict]:
    out: list[Verdict] = []
    for pdef in pipelines:
        rows = [
            r
            for r in await store.list_runs(pipeline=pdef.name, limit=1_000_000)
            if r.status in OPEN
        ]
        for row in sorted(rows, key=lambda r: r.created_at):
            out.append(await check_run(store, row, pdef))
    return out
