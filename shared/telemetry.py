"""OpenTelemetry set-up from the standard OTEL_* variables, one `service.name` per service.

Several services may share one process (the embedded demo), so each gets its own
TracerProvider with its own Resource; they share the span processors.

With no exporter configured, spans are not recorded (`_WhileExporting` drops them): they still
carry the trace id from hop to hop, because every event names its request's trace, but cost
about a third of a recorded span and build no attributes, events or export batches.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract as _extract
from opentelemetry.propagate import inject as _inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes

_processors: list[SpanProcessor] = []
_providers: dict[str, TracerProvider] = {}


def configure_from_env(environ: Mapping[str, str] | None = None) -> None:
    """Install exporters named by OTEL_TRACES_EXPORTER (otlp, console, none). Unset: traces off."""
    env = os.environ if environ is None else environ
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not exporters and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        exporters = "otlp"
    for name in filter(None, (e.strip() for e in exporters.split(","))):
        if name == "none":
            continue
        if name == "console":
            add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}")


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def add_span_processor(processor: SpanProcessor) -> None:
    """Send every service's spans (existing and future providers) to `processor`."""
    _processors.append(processor)
    for provider in _providers.values():
        provider.add_span_processor(processor)


def remove_span_processor(processor: SpanProcessor) -> None:
    """Stop sending spans to `processor` (tests); providers are rebuilt lazily."""
    if processor in _processors:
        _processors.remove(processor)
        _providers.clear()


class _WhileExporting(Sampler):
    """Record (parent-based) while some exporter listens; otherwise keep only the ids."""

    _recording = ParentBased(ALWAYS_ON)
    _dropped = SamplingResult(Decision.DROP)

    def should_sample(self, parent_context: otel_context.Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Any = None, trace_state: trace.TraceState | None = None) -> SamplingResult:
        if not _processors:
            return self._dropped
        return self._recording.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                             trace_state)

    def get_description(self) -> str:
        return "WhileExporting"


_SAMPLER = _WhileExporting()


def tracer(service: str) -> trace.Tracer:
    """The tracer of one ClearCard service (`service.name` = clearcard-<service>)."""
    provider = _providers.get(service)
    if provider is None:
        provider = TracerProvider(resource=Resource.create({"service.name": f"clearcard-{service}"}),
                                  sampler=_SAMPLER)
        for processor in _processors:
            provider.add_span_processor(processor)
        _providers[service] = provider
    return provider.get_tracer("clearcard")


def tracer_of_current_span() -> trace.Tracer | None:
    """The tracer of the service whose span is current, so child spans keep its service.name."""
    span = trace.get_current_span()
    resource = getattr(span, "resource", None)
    if resource is None or not span.get_span_context().is_valid:
        return None
    name = str(resource.attributes.get("service.name", ""))
    return tracer(name.removeprefix("clearcard-")) if name.startswith("clearcard-") else None


def shutdown() -> None:
    """Flush exporters before the process exits."""
    for provider in _providers.values():
        provider.force_flush()
    for processor in _processors:
        processor.shutdown()


def inject(headers: MutableMapping[str, Any]) -> None:
    """Write the current trace context into AMQP headers (W3C traceparent)."""
    _inject(headers)


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """Read a trace context from AMQP headers; non-string values are ignored."""
    return _extract({k: v for k, v in headers.items() if isinstance(v, str)})


def current_trace_id() -> str:
    """The 32-hex trace id of the current span, or a fresh random one outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format(ctx.trace_id, "032x")
    return secrets.token_hex(16)
