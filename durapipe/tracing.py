"""OpenTelemetry tracing of runs: a span per execution of a run and per journaled call.

Off unless configured. ``durapipe worker``/``run``/``resume``/``start`` turn it on when the
standard OpenTelemetry environment names an exporter (``OTEL_TRACES_EXPORTER``, or an OTLP
endpoint in ``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); a program
that configures OpenTelemetry itself calls :func:`enable`. Needs ``pip install 'durapipe[otel]'``.

What is traced (see docs/observability.md):

- ``run PIPELINE``: one span per execution of a run in a process (a run that sleeps for a week
  and resumes has two), under the span that started it: the caller's current span when the
  run was started (``Client.start`` inside a traced request), the parent's ``child`` span for a
  sub-pipeline, else a short ``start run`` span (so every execution of one run shares a trace);
- a span per journaled call that runs for real (``step NAME``... with the run id, pipeline,
  version, step key and attempt as attributes); a call replayed from the history emits nothing,
  so a resumed run's trace holds each recorded call once, plus the attempts that really ran again;
- ``dp.exec`` commands get ``TRACEPARENT`` (and ``TRACESTATE``) in their environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

from . import _serde
from ._engine import observe
from ._kinds import EventKind, Family, RunStatus

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from ._engine.journaled import Call
    from ._engine.run import RunContext

__all__ = ["configured_by_env", "disable", "enable", "enabled"]

log = logging.getLogger("durapipe")

_observer: _Tracing | None = None

# Calls too small to be worth a span of their own (dp.now, dp.uuid4, dp.patched).
_UNTRACED = frozenset({Family.VALUE.value, "patch"})
_FAILED = frozenset(
    {EventKind.STEP_FAILED.value, EventKind.CHILD_FAILED.value, EventKind.INPUT_TIMEOUT.value}
)
_BAD_ENDS = frozenset({RunStatus.FAILED, RunStatus.BLOCKED, RunStatus.ABORTED, "lost", "error"})


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Trace every run executed or started in this process from now on.

    ``tracer_provider``: where spans go (default: OpenTelemetry's global provider, which your
    program or ``opentelemetry-instrument`` configured). Calling it again replaces the provider.
    """
    global _observer
    disable()
    _observer = _Tracing(tracer_provider)
    observe.add(_observer)


def disable() -> None:
    """Stop tracing runs that begin from now on."""
    global _observer
    if _observer is not None:
        observe.remove(_observer)
        _observer = None


def enabled() -> bool:
    """Whether runs are traced."""
    return _observer is not None


def configured_by_env() -> bool:
    """Whether the standard OpenTelemetry environment asks for traces to be exported."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def enable_from_env() -> None:
    """For the CLI: turn tracing on when the environment asks for it (see the module's doc).

    Uses the global tracer provider when something (``opentelemetry-instrument``) set one up;
    otherwise builds one with the exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``).
    Raises ConfigError, one line, when OpenTelemetry or a named exporter is not installed.
    """
    if not configured_by_env() or enabled():
        return
    from .errors import ConfigError

    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "OTEL_* variables ask for traces but OpenTelemetry is not installed: "
            "pip install 'durapipe[otel]' (or unset OTEL_TRACES_EXPORTER)"
        ) from None
    current = trace.get_tracer_provider()
    if isinstance(current, SdkProvider):
        enable(current)
        return
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp") or "otlp"
    provider = SdkProvider(resource=Resource.create({"service.name": _service_name()}))
    found = {ep.name: ep for ep in metadata.entry_points(group="opentelemetry_traces_exporter")}
    for name in (n.strip() for n in names.split(",")):
        if not name or name == "none":
            continue
        ep = found.get(name)
        if ep is None:
            hint = (
                "pip install opentelemetry-exporter-otlp"
                if name.startswith("otlp")
                else f"install the package that provides the {name!r} span exporter"
            )
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER names {name!r}, but no such span exporter is installed: {hint}"
            )
        provider.add_span_processor(BatchSpanProcessor(ep.load()()))
    trace.set_tracer_provider(provider)
    enable(provider)


def shutdown() -> None:
    """Flush spans not exported yet (the CLI calls it before it exits)."""
    if _observer is None:
        return
    flush = getattr(_observer.provider, "shutdown", None)
    if flush is not None:
        try:
            flush()
        except Exception as exc:  # an exporter that cannot reach its collector
            log.warning("tracing: exporting the last spans failed: %s", exc)


def _service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or "durapipe"


def _id(text: str, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big") or 1


class _Tracing(observe.Observer):
    """Spans for runs and calls, through the OpenTelemetry API."""

    def __init__(self, provider: TracerProvider | None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self.trace = trace
        self.provider = provider or trace.get_tracer_provider()
        self.tracer = self.provider.get_tracer("durapipe", __version__)
        self.propagator = TraceContextTextMapPropagator()

    # ---------------------------------------------------------------- runs

    def _attrs(self, ctx: RunContext) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "durapipe.run_id": ctx.run_id,
            "durapipe.pipeline": ctx.pipeline,
            "durapipe.version": ctx.version,
            "durapipe.attempt": ctx.attempt,
            "durapipe.root_run_id": ctx.root_run_id,
        }
        if ctx.parent_run_id:
            attrs["durapipe.parent_run_id"] = ctx.parent_run_id
        return attrs

    def _parent(self, ctx: RunContext) -> Any:
        """The context the run's spans belong under: what started it, as recorded."""
        carrier = None
        if ctx.started_data:
            try:
                carrier = (_serde.loads(ctx.started_data) or {}).get("trace")
            except Exception:
                carrier = None
        if isinstance(carrier, dict) and carrier.get("traceparent"):
            return self.propagator.extract(carrier)
        # Started where nothing traced: every execution of the run still shares one trace,
        # named by its root run id (its root span is not recorded anywhere).
        sc = self.trace.SpanContext(
            trace_id=_id(ctx.root_run_id, 128),
            span_id=_id(ctx.run_id + ":start", 64),
            is_remote=True,
            trace_flags=self.trace.TraceFlags(self.trace.TraceFlags.SAMPLED),
        )
        return self.trace.set_span_in_context(self.trace.NonRecordingSpan(sc))

    def run_begin(self, ctx: RunContext) -> None:
        span = self.tracer.start_span(
            f"run {ctx.pipeline}", context=self._parent(ctx), attributes=self._attrs(ctx)
        )
        ctx.obs_data["trace.run"] = span
        ctx.obs_data["trace.calls"] = {}

    def run_end(self, ctx: RunContext, outcome: str) -> None:
        span: Span | None = ctx.obs_data.pop("trace.run", None)
        calls: dict[str, Span] = ctx.obs_data.pop("trace.calls", {})
        for open_span in calls.values():  # the run suspended, stopped or was lost meanwhile
            open_span.set_attribute("durapipe.interrupted", outcome)
            open_span.end()
        if span is None:
            return
        span.set_attribute("durapipe.outcome", str(outcome))
        if outcome in _BAD_ENDS:
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, str(outcome)))
        span.end()

    # ---------------------------------------------------------------- calls

    def call_begin(self, ctx: RunContext, call: Call) -> None:
        run: Span | None = ctx.obs_data.get("trace.run")
        if run is None or call.family in _UNTRACED:
            return
        fam = call.family
        name = (
            call.name
            if fam == Family.STEP
            else ("sleep" if fam == Family.TIMER else f"{fam} {call.name}")
        )
        attrs = self._attrs(ctx)
        attrs["durapipe.step_key"] = call.key
        attrs["durapipe.call"] = fam
        if call.label:
            attrs["durapipe.step_label"] = call.label
        span = self.tracer.start_span(
            name, context=self.trace.set_span_in_context(run), attributes=attrs
        )
        ctx.obs_data["trace.calls"][call.key] = span

    def call_event(self, ctx: RunContext, event: dict[str, Any]) -> None:
        calls: dict[str, Span] | None = ctx.obs_data.get("trace.calls")
        if not calls:
            return
        span = calls.get(event["step"])
        if span is None:
            return
        kind = event["kind"]
        if kind == EventKind.STEP_RETRY:
            span.add_event("retry", {"durapipe.error": _message(event.get("data"))})
            return
        from ._kinds import COMPLETIONS

        if kind not in COMPLETIONS:
            return
        del calls[event["step"]]
        if kind in _FAILED:
            span.set_status(
                self.trace.Status(self.trace.StatusCode.ERROR, _message(event.get("data")))
            )
        span.end()

    def carrier(self, ctx: RunContext | None, key: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if ctx is None:
            # A run started from this process (Client.start): under the caller's span, or
            # under a short span of its own so that all its executions share a trace.
            current = self.trace.get_current_span()
            if current.get_span_context().is_valid:
                self.propagator.inject(out)
                return out
            start = self.tracer.start_span("start run")
            start.end()
            self.propagator.inject(out, context=self.trace.set_span_in_context(start))
            return out
        found: Span | None = ctx.obs_data.get("trace.calls", {}).get(key) if key else None
        found = found or ctx.obs_data.get("trace.run")
        if found is not None:
            self.propagator.inject(out, context=self.trace.set_span_in_context(found))
        return out


def _message(data: Any) -> str:
    if not data:
        return ""
    try:
        got = _serde.loads(data) or {}
    except Exception:
        return ""
    err = got.get("error") if isinstance(got, dict) else None
    if isinstance(err, dict):
        return f"{err.get('type', 'Error')}: {err.get('message', '')}"[:500]
    return ""
