"""Tracing: a traceparent survives publish -> wire -> consume, and API calls get correlation ids."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from strowger import logs
from strowger.events.envelope import Envelope, Message, decode, encode
from strowger.ops import tracing
from strowger.ops.tracing import (
    CORRELATION_HEADER,
    TracingMiddleware,
    TracingSettings,
    configure_tracing,
    consume_span,
    current_traceparent,
    saga_step_span,
    stamp,
    traceparent_for_publish,
    traces_url,
)

TOPIC = "bss.ordering.events"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(TracingSettings(), component="test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def named(exporter: InMemorySpanExporter, prefix: str) -> ReadableSpan:
    [span] = [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]
    return span


def order_created() -> Envelope:
    return Envelope(
        event_type="ProductOrderCreateEvent",
        payload={"productOrder": {"id": "PO-1", "state": "acknowledged"}},
        entity_key="PO-1",
        correlation_id="corr-1",
    )


def through_the_wire(envelope: Envelope) -> Envelope:
    message = encode(envelope, TOPIC)
    return decode(Message(message.topic, message.key, dict(message.headers), message.value))


def test_a_traceparent_survives_publish_to_consume(spans: InMemorySpanExporter) -> None:
    received = through_the_wire(stamp(order_created(), TOPIC))
    with consume_span(received, "billing", TOPIC):
        pass
    publish, consume = named(spans, "publish"), named(spans, "process")
    assert publish.kind is SpanKind.PRODUCER and consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None and consume.parent.is_remote
    assert consume.parent.span_id == publish.context.span_id
    assert consume.context.trace_id == publish.context.trace_id
    assert consume.attributes is not None
    assert consume.attributes["messaging.consumer.group.name"] == "billing"
    assert consume.attributes["messaging.message.id"] == received.event_id


def test_a_handler_publishes_within_the_trace_of_the_event_it_handles(spans: InMemorySpanExporter) -> None:
    received = through_the_wire(stamp(order_created(), TOPIC))
    with consume_span(received, "billing", TOPIC):
        caused = stamp(
            received.caused("BillCreateEvent", {"customerBill": {"id": "B-1"}}), "bss.billing.events"
        )
    consumed = named(spans, "process")
    second_publish = named(spans, "publish bss.billing.events")
    assert second_publish.parent is not None
    assert second_publish.parent.span_id == consumed.context.span_id
    assert caused.traceparent.split("-")[1] == f"{consumed.context.trace_id:032x}"
    assert caused.traceparent != received.traceparent


def test_every_message_gets_a_valid_traceparent_even_outside_any_span(spans: InMemorySpanExporter) -> None:
    assert current_traceparent() == ""
    version, trace_id, span_id, flags = traceparent_for_publish(TOPIC).split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    assert int(flags, 16) & 0x01  # sampled
    assert int(trace_id, 16) and int(span_id, 16)


def test_traceparent_without_any_configuration_still_works() -> None:
    tracing.shutdown_tracing()
    assert traceparent_for_publish(TOPIC).startswith("00-")


def test_consume_span_sets_and_restores_the_log_context(spans: InMemorySpanExporter) -> None:
    envelope = order_created()
    with consume_span(envelope, "billing"):
        assert (logs.correlation_id.get(), logs.event_id.get()) == ("corr-1", envelope.event_id)
    assert (logs.correlation_id.get(), logs.event_id.get()) == ("", "")


def test_a_failing_handler_is_recorded_on_its_span(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), consume_span(order_created(), "billing"):
        raise RuntimeError("boom")
    consume = named(spans, "process")
    assert consume.status.status_code is StatusCode.ERROR
    assert [event.name for event in consume.events] == ["exception"]


def test_a_consumed_message_without_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    with consume_span(order_created(), "billing"):
        pass
    assert named(spans, "process").parent is None


def test_saga_steps_are_children_of_the_consume_span(spans: InMemorySpanExporter) -> None:
    with (
        consume_span(order_created(), "ordering"),
        saga_step_span("ProductOrderSaga", "S-1", "reserveResource"),
    ):
        pass
    step = named(spans, "saga ProductOrderSaga reserveResource")
    assert step.parent is not None and step.parent.span_id == named(spans, "process").context.span_id


def api(seen: list[tuple[str, str]]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    @app.get("/productOrder/{order_id}")
    async def show(order_id: str) -> dict[str, str]:
        seen.append((logs.correlation_id.get(), traceparent_for_publish(TOPIC)))
        return {"id": order_id}

    return app


async def get(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def test_an_api_call_gets_a_correlation_id_at_the_entry_point(spans: InMemorySpanExporter) -> None:
    seen: list[tuple[str, str]] = []
    response = await get(api(seen), "/productOrder/PO-1")
    correlation_id = response.headers[CORRELATION_HEADER]
    assert len(correlation_id) == 36
    assert seen[0][0] == correlation_id
    server = named(spans, "GET /productOrder/{order_id}")
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert named(spans, "publish").parent.span_id == server.context.span_id  # type: ignore[union-attr]


async def test_an_api_call_keeps_the_callers_correlation_id_and_trace(spans: InMemorySpanExporter) -> None:
    seen: list[tuple[str, str]] = []
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await get(api(seen), "/productOrder/PO-1", {CORRELATION_HEADER: "abc", "traceparent": caller})
    assert response.headers[CORRELATION_HEADER] == "abc"
    assert seen[0][0] == "abc"
    assert seen[0][1].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    server = named(spans, "GET")
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "b7ad6b7169203331"
    assert logs.correlation_id.get() == ""


def test_traces_url_appends_the_otlp_path_once() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


def test_an_otlp_endpoint_adds_an_exporter_and_none_adds_nothing() -> None:
    quiet = configure_tracing(TracingSettings())
    assert quiet._active_span_processor._span_processors == ()
    exporting = configure_tracing(TracingSettings(otlp_endpoint="http://127.0.0.1:1"))
    assert len(exporting._active_span_processor._span_processors) == 1
    tracing.shutdown_tracing()


# Without an exporter: non-recording spans, the same ids and sampling as the SDK's --------------


@pytest.fixture
def unexported() -> Iterator[None]:
    configure_tracing(TracingSettings())
    yield
    tracing.shutdown_tracing()


async def test_without_exporter_an_api_call_still_continues_the_callers_trace(unexported: None) -> None:
    seen: list[tuple[str, str]] = []
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await get(api(seen), "/productOrder/PO-1", {CORRELATION_HEADER: "abc", "traceparent": caller})
    assert response.headers[CORRELATION_HEADER] == "abc"
    _, trace_id, span_id, flags = seen[0][1].split("-")
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span_id != "b7ad6b7169203331" and int(span_id, 16) != 0
    assert int(flags, 16) & 1 == 1  # sampled, as the caller asked
    assert current_traceparent() == ""  # the request's span is current only while it is served


async def test_without_exporter_each_publish_of_a_request_gets_its_own_span_in_one_trace(
    unexported: None,
) -> None:
    seen: list[tuple[str, str]] = []
    app = api(seen)
    await get(app, "/productOrder/PO-1")
    await get(app, "/productOrder/PO-2")
    first, second = (traceparent.split("-") for _, traceparent in seen)
    assert first[1] != second[1]  # a request without traceparent starts a trace of its own
    assert len(first[1]) == 32 and len(first[2]) == 16


@pytest.mark.parametrize("ratio", [0.0, 1.0])
@pytest.mark.parametrize(
    "parent",
    [
        None,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",  # sampled, random trace id
    ],
)
def test_an_unexported_span_has_the_sampling_flags_the_sdk_gives(ratio: float, parent: str | None) -> None:
    configure_tracing(TracingSettings(trace_sample_ratio=ratio))
    try:
        headers = {"traceparent": parent, "tracestate": "vendor=opaque,other=1"} if parent else {}
        remote = tracing.context_from_headers(headers)
        local = trace.set_span_in_context(tracing.unexported_span("parent", remote))
        for context in (remote, local):
            light = tracing.unexported_span("x", context).get_span_context()
            sdk = tracing.tracer().start_span("x", context=context).get_span_context()
            assert light.trace_flags == sdk.trace_flags
            assert light.trace_state == sdk.trace_state
            assert light.is_valid and not light.is_remote
            if parent:
                assert light.trace_id == sdk.trace_id == int(parent.split("-")[1], 16)
    finally:
        tracing.shutdown_tracing()
