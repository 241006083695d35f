"""OpenTelemetry tracing: one tracer provider per process, W3C ``traceparent`` on every message.

A trace follows one order through every component:

* an API call opens a SERVER span (:class:`TracingMiddleware`), which also gives
  the request its correlationId (``X-Correlation-ID``, made up when absent);
* publishing opens a short PRODUCER span whose context travels in the message's
  ``traceparent`` header (:func:`traceparent_for_publish`, :func:`stamp`);
* consuming opens a CONSUMER span whose parent is that PRODUCER span
  (:func:`consume_span`), so the handler's own publishes are its children;
* each saga step runs in an INTERNAL span (:func:`saga_step_span`).

Export is OFF by default: without ``STROWGER_OTLP_ENDPOINT`` the API's SERVER span and
the PRODUCER spans of published events are non-recording spans (:func:`unexported_span`):
the same ids, sampling flags and parentage as the SDK's, so every message still carries
a valid traceparent, without the recording the SDK pays for a span nobody will read.
With it, spans are batched to an OTLP/HTTP collector (Jaeger, Tempo, the OpenTelemetry
Collector).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strowger import __version__, logs
from strowger.events.envelope import Envelope, new_id

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


_INHERITED_FLAGS = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID  # what a child keeps of its parent's


def unexported_span(name: str, context: otel_context.Context | None = None) -> Span:
    """The span the SDK would start as a child of ``context`` (default: the current one), not recorded.

    For spans nothing exports: its trace id (the parent's, else a new one), a new span
    id, the sampler's decision and the parent's trace state are exactly what
    ``Tracer.start_span`` gives, so traceparents, sampling and log correlation do not
    change; only the attributes, events and timings nobody would read are not kept
    (a tenth of a POST's CPU when both API spans were recorded).
    """
    sdk_tracer: Any = tracer()  # the SDK's Tracer: its sampler and id generator
    parent = trace.get_current_span(context).get_span_context()
    ids = sdk_tracer.id_generator
    if parent.is_valid and type(sdk_tracer.sampler) is ParentBased:
        # Strowger's sampler is always ParentBased with its default delegates (configure_tracing,
        # tracer()): a child of a valid parent takes the parent's decision and trace state. Asking
        # the sampler for it was a fifth of this function, twice per POST.
        return NonRecordingSpan(
            SpanContext(
                parent.trace_id,
                ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(parent.trace_flags & _INHERITED_FLAGS),
                trace_state=parent.trace_state,
            )
        )
    if parent.is_valid:
        trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
    else:
        trace_id, random_id = ids.generate_trace_id(), ids.is_trace_id_random()
    sampling = sdk_tracer.sampler.should_sample(context, trace_id, name)
    flags = TraceFlags.SAMPLED if sampling.decision.is_sampled() else TraceFlags.DEFAULT
    if random_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    span_context = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=sampling.trace_state,
    )
    return NonRecordingSpan(span_context)


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
    name = f"publish {topic}".strip()
    if not _exporting:
        return format_traceparent(unexported_span(name).get_span_context())
    attributes = _messaging(topic, event_type=event_type, entity_key=entity_key)
    # Started and ended without becoming the current span (nothing runs inside it): the
    # context switch and the propagator's carrier cost more than the span itself.
    span = tracer().start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
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
    return envelope.evolve(traceparent=traceparent)


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
        try:
            parent = context_from_headers(headers)
            if _exporting:
                await self._serve_recorded(scope, receive, send, parent, correlation_id)
            else:
                await self._serve_unexported(scope, receive, send, parent, correlation_id)
        finally:
            logs.correlation_id.reset(token)

    async def _serve_recorded(
        self, scope: Scope, receive: Receive, send: Send, parent: otel_context.Context, correlation_id: str
    ) -> None:
        method = scope.get("method", "GET")
        attributes = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "strowger.correlation_id": correlation_id,
        }
        with tracer().start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            await self.app(scope, receive, _responder(send, span, correlation_id))
            _name_after_route(span, scope, method)

    async def _serve_unexported(
        self, scope: Scope, receive: Receive, send: Send, parent: otel_context.Context, correlation_id: str
    ) -> None:
        """The request inside a current, non-recording SERVER span (nothing exports it)."""
        span = unexported_span(scope.get("method", "GET"), parent)
        attached = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, _responder(send, None, correlation_id))
        finally:
            otel_context.detach(attached)


_CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def accepted_correlation_id(sent: str) -> str:
    """The caller's correlationId if it is a plain token (≤ 128 characters), else a new one.

    It travels into every event, log line and webhook of the order: anything else (a long
    or odd value) is replaced rather than trusted.
    """
    return sent if _CORRELATION_ID.fullmatch(sent) else new_id()


def _responder(send: Send, span: Span | None, correlation_id: str) -> Send:
    """``send`` adding the correlationId header, and recording the status on ``span`` if recorded."""

    async def send_with_correlation(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            if span is not None:
                _record_status(span, int(message["status"]))
        await send(message)

    return send_with_correlation


def _record_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def _name_after_route(span: Span, scope: MutableMapping[str, Any], method: str) -> None:
    # The route template (/productOrder/{id}), not the path: span names must have low cardinality.
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        span.update_name(f"{method} {path}")
        span.set_attribute("http.route", path)
