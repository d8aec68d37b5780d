"""`durapipe upgrade check`: replay open runs against new code, with no side effects."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ._definition import PipelineDef
from ._execution import RETURNED_EARLY, Outcome, replay
from ._kinds import RESUMABLE_EXTRA, RunStatus
from ._store import Store
from ._store import schema as S
from .errors import NonDeterminismError

OPEN = (*S.ACTIVE, *RESUMABLE_EXTRA, RunStatus.FAILED)  # failed runs can be resumed too


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


async def check_run(store: Store, row: Any, pdef: PipelineDef) -> Verdict:
    base = {
        "run_id": row.id,
        "pipeline": row.pipeline,
        "recorded_version": row.version,
        "current_version": pdef.version,
        "status": row.status,
    }
    result = await replay(row, await store.events(row.id), pdef, owner="dry-replay")
    if result.outcome is Outcome.ABORTED:
        return Verdict(
            **base,
            verdict="would_abort",
            detail=f"pinned to version {row.version!r}; the code is version {pdef.version!r}",
        )
    if result.outcome is Outcome.FRONTIER:
        return Verdict(
            **base,
            verdict="compatible",
            detail=f"replays all {result.recorded} recorded calls; continues live at step {result.frontier}",
        )
    if result.outcome is Outcome.BLOCKED:
        exc = result.error
        assert isinstance(exc, NonDeterminismError)
        if exc.now == RETURNED_EARLY:
            return Verdict(
                **base,
                verdict="nondeterministic",
                detail=f"at step {exc.step}: recorded {exc.recorded}, the code now returns before reaching it",
            )
        return Verdict(
            **base,
            verdict="nondeterministic",
            detail=f"at step {exc.step}: recorded {exc.recorded}, the code now does {exc.now}",
        )
    if result.outcome is Outcome.FAILED:
        exc = result.error
        return Verdict(
            **base,
            verdict="compatible",
            detail=f"replays its history; then raises {type(exc).__name__}: {exc}",
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
