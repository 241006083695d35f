"""OpenTelemetry tracing: one tracer provider per process, W3C ``traceparent`` on every message.

A trace follows one order through every component:

* an API call opens a SERVER span (:class:`TracingMiddleware`), which also gives
  the request its correlationId (``X-Correlation-ID``, made up when absent);
* publishing opens a short PRODUCER span whose context travels in the message's
  ``traceparent`` header (:func:`traceparent_for_publish`, :func:`stamp`);
* consuming opens a CONSUMER span whose parent is that PRODUCER span
  (:func:`consume_span`), so the handler's own publishes are its children;
* each saga step runs in an INTERNAL span (:func:`saga_step_span`).

Export is OFF by default: without ``STROWGER_OTLP_ENDPOINT`` spans are created
(so every message still carries a valid traceparent) and dropped. With it, spans
are batched to an OTLP/HTTP collector (Jaeger, Tempo, the OpenTelemetry Collector).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strowger import __version__, logs
from strowger.events.envelope import Envelope

TRACER_NAME = "strowger"
CORRELATION_HEADER = "X-Correlation-ID"
TRACEPARENT = "traceparent"

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None  # of _provider, made once: get_tracer costs more than a span
_exporting = False  # whether the provider has somewhere to send spans (see exporting())


class TracingSettings(BaseSettings):
    """Tracing settings (``STROWGER_OTLP_ENDPOINT``, ``STROWGER_TRACE_SAMPLE_RATIO``...)."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_", extra="ignore", frozen=True)

    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318 ; unset: nothing exported
    otlp_headers: dict[str, str] = Field(default_factory=dict)  # e.g. an API key for a SaaS collector
    service_name: str = "strowger"
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (as OTEL_EXPORTER_OTLP_ENDPOINT is read)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def configure_tracing(
    settings: TracingSettings | None = None,
    *,
    component: str = "all",
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Create this process's tracer provider; call once at start-up (tests may call it again).

    ``exporter`` (e.g. an in-memory exporter in tests) is used as given, synchronously;
    otherwise the OTLP/HTTP exporter is used if ``otlp_endpoint`` is set.
    """
    global _provider, _tracer, _exporting
    settings = settings or TracingSettings()
    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": __version__,
            "service.instance.id": str(uuid.uuid4()),
            "strowger.component": component,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
    )
    processor = _processor(settings, exporter)
    if processor is not None:
        provider.add_span_processor(processor)
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = None
    _exporting = processor is not None
    return provider


def _processor(settings: TracingSettings, exporter: SpanExporter | None) -> SpanProcessor | None:
    if exporter is not None:
        return SimpleSpanProcessor(exporter)
    if not settings.otlp_endpoint:
        return None
    # Imported only when used: the exporter pulls in requests and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    otlp = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint), headers=settings.otlp_headers)
    return BatchSpanProcessor(otlp)


def shutdown_tracing() -> None:
    """Flush and close the exporter (at process exit)."""
    global _provider, _tracer, _exporting
    if _provider is not None:
        _provider.shutdown()
        _provider = None
    _tracer = None
    _exporting = False


def exporting() -> bool:
    """Whether spans are exported (an OTLP endpoint or a test exporter is configured).

    Without an exporter a span is dropped when it ends, yet still costs its creation (a
    hundred microseconds or more): hot paths (the consumer runtime) skip optional spans then.
    """
    return _exporting


def tracer() -> trace.Tracer:
    """The process's tracer; a provider without exporter is made on first use if none was configured."""
    global _provider, _tracer
    if _provider is None:
        _provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))
        _tracer = None
    if _tracer is None:
        _tracer = _provider.get_tracer(TRACER_NAME, __version__)
    return _tracer


# Propagation ----------------------------------------------------------------------------------


def current_traceparent() -> str:
    """The W3C traceparent of the current span, or "" outside any span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_from(traceparent: str) -> otel_context.Context:
    """The remote parent context a traceparent names (an empty context if it is absent or invalid)."""
    carrier = {TRACEPARENT: traceparent} if traceparent else {}
    return _propagator.extract(carrier)


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The remote parent context in message or HTTP headers (``traceparent``, ``tracestate``)."""
    return _propagator.extract({key.lower(): value for key, value in headers.items()})


def traceparent_for_publish(topic: str = "", event_type: str = "", entity_key: str = "") -> str:
    """A traceparent for one message being published: a PRODUCER span, child of the current span.

    Always a valid traceparent: outside any span the message starts a new trace.
    """
    attributes = _messaging(topic, event_type=event_type, entity_key=entity_key)
    # Started and ended without becoming the current span (nothing runs inside it): the
    # context switch and the propagator's carrier cost more than the span itself.
    span = tracer().start_span(f"publish {topic}".strip(), kind=SpanKind.PRODUCER, attributes=attributes)
    span.end()
    return format_traceparent(span.get_span_context())


def format_traceparent(span_context: trace.SpanContext) -> str:
    """The W3C traceparent naming ``span_context`` ("" if it is not valid), as the propagator writes it."""
    if not span_context.is_valid:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"


def stamp(envelope: Envelope, topic: str) -> Envelope:
    """``envelope`` with the traceparent of its publication on ``topic`` (call where it is emitted)."""
    traceparent = traceparent_for_publish(topic, envelope.event_type, envelope.entity_key)
    return replace(envelope, traceparent=traceparent)


def _messaging(topic: str, **extra: str) -> dict[str, str]:
    attributes = {"messaging.system": "strowger", "messaging.destination.name": topic}
    attributes.update({f"strowger.{key}": value for key, value in extra.items() if value})
    return attributes


# Spans ----------------------------------------------------------------------------------------


@contextmanager
def consume_span(envelope: Envelope, consumer: str, topic: str = "") -> Iterator[Span]:
    """A CONSUMER span for ``consumer`` handling ``envelope``, child of the span that published it.

    While it is open the log context carries the event's correlationId and eventId.
    An exception escaping it is recorded on the span and re-raised.
    """
    attributes = _messaging(
        topic,
        event_type=envelope.event_type,
        entity_key=envelope.entity_key,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
    )
    attributes["messaging.message.id"] = envelope.event_id
    attributes["messaging.consumer.group.name"] = consumer
    correlation = logs.correlation_id.set(envelope.correlation_id)
    event = logs.event_id.set(envelope.event_id)
    try:
        with tracer().start_as_current_span(
            f"process {envelope.event_type}",
            context=context_from(envelope.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span
    finally:
        logs.event_id.reset(event)
        logs.correlation_id.reset(correlation)


@contextmanager
def saga_step_span(saga_type: str, saga_id: str, step: str, action: str = "execute") -> Iterator[Span]:
    """An INTERNAL span for one saga step (``action``: execute, compensate, retry, timeout)."""
    attributes = {
        "strowger.saga_type": saga_type,
        "strowger.saga_id": saga_id,
        "strowger.step": step,
        "strowger.action": action,
    }
    with tracer().start_as_current_span(f"saga {saga_type} {step} {action}", attributes=attributes) as span:
        yield span


# API ------------------------------------------------------------------------------------------


class TracingMiddleware:
    """ASGI middleware: a SERVER span and a correlationId for every HTTP request.

    The correlationId comes from the ``X-Correlation-ID`` request header or is
    made up here, the entry point; it is set in :data:`strowger.logs.correlation_id`
    for the request's duration (so events emitted while handling it carry it) and
    returned in the ``X-Correlation-ID`` response header. An incoming W3C
    ``traceparent`` makes the span a child of the caller's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        correlation_id = accepted_correlation_id(headers.get(CORRELATION_HEADER.lower(), ""))
        token = logs.correlation_id.set(correlation_id)
        method = scope.get("method", "GET")
        attributes = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "strowger.correlation_id": correlation_id,
        }
        try:
            with tracer().start_as_current_span(
                method, context=context_from_headers(headers), kind=SpanKind.SERVER, attributes=attributes
            ) as span:
                await self.app(scope, receive, _responder(send, span, correlation_id))
                _name_after_route(span, scope, method)
        finally:
            logs.correlation_id.reset(token)


_CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def accepted_correlation_id(sent: str) -> str:
    """The caller's correlationId if it is a plain token (≤ 128 characters), else a new one.

    It travels into every event, log line and webhook of the order: anything else (a long
    or odd value) is replaced rather than trusted.
    """
    return sent if _CORRELATION_ID.fullmatch(sent) else str(uuid.uuid4())


def _responder(send: Send, span: Span, correlation_id: str) -> Send:
    async def send_with_correlation(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            status = int(message["status"])
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        await send(message)

    return send_with_correlation


def _name_after_route(span: Span, scope: MutableMapping[str, Any], method: str) -> None:
    # The route template (/productOrder/{id}), not the path: span names must have low cardinality.
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        span.update_name(f"{method} {path}")
        span.set_attribute("http.route", path)
