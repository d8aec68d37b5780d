"""OpenTelemetry tracing (durapipe.tracing): a span per execution and per call run for real.

The SDK's in-memory exporter collects the spans of a run that crashes at a chosen write and
is resumed here: replay emits no span for a recorded call, so each completed step has one
span in the whole trace, the step whose completion was lost has two (its real re-run), and
every execution, child and command shares the run's trace. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from durapipe import tracing  # noqa: E402
from durapipe.testing import crash_run, resume_run, run_pipeline  # noqa: E402
from tests.pipelines import traced  # noqa: E402

pytestmark = pytest.mark.asyncio


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def _names(got: tuple[ReadableSpan, ...]) -> Counter[str]:
    return Counter(s.name for s in got)


async def test_a_resumed_run_has_each_recorded_call_once(
    store: Any, spans: Any, tmp_path: Path
) -> None:
    out = tmp_path / "traceparent"
    view = await crash_run(store, traced.traced, before="step_completed:build", n=1, out=str(out))
    first = _names(spans.get_finished_spans())
    assert first["prepare"] == 2  # the parent's and the child's
    assert first["build"] == 1  # interrupted: its completion was never written
    assert first["publish"] == 0

    done = await resume_run(store, traced.traced, view.run_id)
    assert done.status == "completed" and done.output == (((1 + 1) + 1) * 2) + 100

    got = spans.get_finished_spans()
    names = _names(got)
    # Replay emitted nothing for what was recorded: prepare (parent and child), the child run,
    # the exec once each; build twice (its real re-run); publish once.
    assert names["prepare"] == 2
    assert names["child traced_child"] == 1
    assert names["run traced_child"] == 1
    assert names["build"] == 2
    assert names["publish"] == 1
    assert names["run traced"] == 2  # two executions of the run
    execs = [s for s in got if s.name == "exec"]
    assert len(execs) == 1

    # One trace: both executions, the child, its calls, and the command's TRACEPARENT.
    assert len({s.context.trace_id for s in got}) == 1
    runs = [s for s in got if s.name == "run traced"]
    by_id = {s.context.span_id: s for s in got}
    for s in got:
        if s.name in ("prepare", "build", "publish", "exec", "child traced_child"):
            assert s.parent is not None and by_id[s.parent.span_id].name.startswith("run ")
    child_run = next(s for s in got if s.name == "run traced_child")
    assert child_run.parent is not None
    assert by_id[child_run.parent.span_id].name == "child traced_child"
    tp = out.read_text()
    assert tp.split("-")[1] == f"{execs[0].context.trace_id:032x}"
    assert tp.split("-")[2] == f"{execs[0].context.span_id:016x}"

    attrs = next(s for s in got if s.name == "publish").attributes or {}
    assert attrs["durapipe.run_id"] == view.run_id
    assert attrs["durapipe.pipeline"] == "traced"
    assert attrs["durapipe.step_key"]
    assert attrs["durapipe.attempt"] == 2
    interrupted = [s for s in got if s.name == "build" and s.attributes]
    assert sum(1 for s in interrupted if "durapipe.interrupted" in (s.attributes or {})) == 1
    assert {(s.attributes or {}).get("durapipe.outcome") for s in runs} == {"lost", "completed"}


async def test_nothing_is_traced_unless_enabled(store: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    tracing.disable()
    view = await run_pipeline(store, traced.traced_quick, n=2)
    assert view.status == "completed"
    assert exporter.get_finished_spans() == ()
