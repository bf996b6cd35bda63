"""OpenTelemetry spans for runs, built from the run's trace events.

One span per run (``threadloom.run``) with a child per thought-graph node that does work: each
generation and judge pass (ended when the worker hands back its completion, with its tokens),
each graph node (ended when it has produced its candidates), and each score, selection or vote
(an instant span carrying the value). Spans are only made when an OpenTelemetry tracer provider
is configured, by the application or by `configure_from_env` (which the command line calls);
otherwise `RunSpans.sink` is the caller's own event sink and a run pays nothing.

Prompts and generated text never become span attributes: only sizes, token counts, labels of
strategies and scores.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from threadloom.errors import MissingDependencyError
from threadloom.orchestrator.events import NodeEvent, TraceEvent, UpdateEvent

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from threadloom.types import Result

logger = logging.getLogger(__name__)

EventSink = Callable[[TraceEvent], None]

_TIMED_KINDS = frozenset({"generation", "judge", "node"})
"""Trace node kinds whose span lasts until an update ends them."""
_USAGE_ATTRIBUTES = (
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "discarded_tokens",
    "drafted_tokens",
    "accepted_tokens",
    "attempts",
    "candidates",
)
_EXPORTER_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


@functools.cache
def _trace_api() -> ModuleType | None:
    """OpenTelemetry's trace API, imported once; None when it is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


@functools.cache
def _provider_named_in_environment() -> bool:
    """Whether the environment names a tracer provider for the API to load (read once)."""
    return "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def active_tracer() -> Tracer | None:
    """threadloom's tracer when an OpenTelemetry tracer provider is configured, else None.

    Every run asks, so the common answer, that no provider was ever set, is read from the API's
    global without its environment lookup (which costs more than the rest of the question).
    """
    trace = _trace_api()
    if trace is None:
        return None
    if getattr(trace, "_TRACER_PROVIDER", ...) is None and not _provider_named_in_environment():
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return trace.get_tracer("threadloom")


def configure_from_env() -> bool:
    """Install an OTLP (or console) span exporter when the standard `OTEL_*` variables ask
    for one and no tracer provider is set yet. True when spans will be exported.

    `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    `OTEL_TRACES_EXPORTER=otlp` select the OTLP/HTTP exporter (configured by the other
    `OTEL_EXPORTER_OTLP_*` variables); `OTEL_TRACES_EXPORTER=console` prints spans;
    `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns tracing off.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if active_tracer() is not None:
        return True
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    wants_otlp = exporter_name == "otlp" or (
        not exporter_name and any(os.environ.get(v) for v in _EXPORTER_VARIABLES)
    )
    if exporter_name != "console" and not wants_otlp:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise MissingDependencyError.for_extra(
            "opentelemetry-sdk", "otel", "Exporting traces (OTEL_* variables are set)"
        ) from None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise MissingDependencyError.for_extra(
                "opentelemetry-exporter-otlp-proto-http", "otel", "Exporting traces over OTLP"
            ) from None
        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": "threadloom"})  # OTEL_SERVICE_NAME wins
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("exporting OpenTelemetry spans with %s", type(exporter).__name__)
    return True


class RunSpans:
    """The spans of one run, fed by its trace events; the run span starts when this is made.

    Args:
        strategy: The strategy's label, recorded on the run span.
        forward: The caller's own event sink; every event still reaches it.
        tracer: The tracer to use (default: `active_tracer()`); None records nothing.
    """

    def __init__(
        self, strategy: str, forward: EventSink | None = None, *, tracer: Tracer | None = None
    ) -> None:
        self._forward = forward
        self._tracer = tracer if tracer is not None else active_tracer()
        self._spans: dict[str, Span] = {}
        self._open: dict[str, Span] = {}
        self._run: Span | None = None
        if self._tracer is not None:
            self._run = self._tracer.start_span(
                "threadloom.run", attributes={"threadloom.strategy": strategy}
            )

    @property
    def sink(self) -> EventSink | None:
        """The event sink to give the run's ThoughtGraph."""
        return self._forward if self._tracer is None else self._record

    def close(self) -> None:
        """End the run's span and any node still open (as aborted); call it in a `finally`,
        where an exception on its way out marks the run span as failed."""
        if self._run is None:
            return
        now = time.time_ns()
        for span in self._open.values():
            span.set_attribute("threadloom.finish_reason", "abort")
            span.end(end_time=now)
        self._open.clear()
        failure = sys.exc_info()[1]
        if failure is not None:
            from opentelemetry.trace import Status, StatusCode

            self._run.set_attribute("threadloom.outcome", type(failure).__name__)
            self._run.set_status(Status(StatusCode.ERROR, type(failure).__name__))
        self._run.end(end_time=now)
        self._run = None

    def finish(self, result: Result) -> Result:
        """Record the run's usage on its span; returns the result unchanged."""
        if self._run is not None:
            usage = result.usage
            self._run.set_attributes(
                {
                    "threadloom.generations": usage.generations,
                    "threadloom.aborted_generations": usage.aborted_generations,
                    "threadloom.verifier_calls": usage.verifier_calls,
                    "threadloom.verifier_tokens": usage.verifier_tokens,
                    "threadloom.truncated": result.truncated,
                    "threadloom.candidates": len(result.candidates),
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                }
            )
        return result

    # ----- events ---------------------------------------------------------------------------

    def _record(self, event: TraceEvent) -> None:
        if self._forward is not None:
            self._forward(event)
        if self._tracer is None or self._run is None:
            return
        if isinstance(event, NodeEvent):
            self._node(event, self._tracer, self._run)
        elif isinstance(event, UpdateEvent):
            self._update(event)

    def _node(self, event: NodeEvent, tracer: Tracer, run: Span) -> None:
        node_id = event.id
        node_kind = event.kind
        parents = event.parents
        if not parents and node_kind == "prompt":
            self._spans[node_id] = run  # the run's root node is the run itself
            return
        from opentelemetry import trace

        parent = self._spans.get(str(parents[0][0])) if parents else None
        context = trace.set_span_in_context(parent or run)
        attributes: dict[str, Any] = {
            "threadloom.node": node_id,
            "threadloom.node.kind": node_kind,
            "threadloom.label": event.label[:200],
        }
        data = event.data
        for key in ("verifier", "value", "passed", "considered", "node"):
            value = data.get(key)
            if isinstance(value, (bool, int, float, str)):
                attributes[f"threadloom.{key}"] = value
        span = tracer.start_span(
            f"threadloom.{node_kind}", context=context, attributes=attributes
        )
        self._spans[node_id] = span
        if node_kind in _TIMED_KINDS:
            self._open[node_id] = span
        else:
            span.end()

    def _update(self, event: UpdateEvent) -> None:
        node_id = event.id
        span = self._open.get(node_id)
        if span is None:
            return
        data = event.data
        for key in _USAGE_ATTRIBUTES:
            value = data.get(key)
            if isinstance(value, int):
                span.set_attribute(f"threadloom.{key}", value)
        if isinstance(data.get("worker"), str):
            span.set_attribute("threadloom.worker", data["worker"])
        if "finish_reason" in data or "candidates" in data:
            if "finish_reason" in data:
                span.set_attribute("threadloom.finish_reason", str(data["finish_reason"]))
            if isinstance(data.get("prompt_tokens"), int):
                span.set_attribute("gen_ai.usage.input_tokens", data["prompt_tokens"])
            if isinstance(data.get("completion_tokens"), int):
                span.set_attribute("gen_ai.usage.output_tokens", data["completion_tokens"])
            span.end()
            del self._open[node_id]
