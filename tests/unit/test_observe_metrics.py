"""The pipeline observer (metrics), emitted-event tracing and the schema validator, without I/O."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from strowger.bus.observe import (
    APPLIED,
    DUPLICATE,
    NULL_OBSERVER,
    MetricsObserver,
    is_null,
    produced_at,
    trace_emitted,
)
from strowger.bus.port import Delivery
from strowger.errors import SchemaViolation
from strowger.events.envelope import Envelope, Header, encode, format_time
from strowger.events.validation import SchemaValidator
from strowger.ops import tracing
from strowger.ops.metrics import Metrics

TOPIC = "bss.ordering.events"
SCHEMA = {
    "type": "object",
    "required": ["eventType", "event"],
    "properties": {
        "event": {
            "type": "object",
            "required": ["thing"],
            "properties": {"thing": {"type": "object", "required": ["id"]}},
        }
    },
}


def thing(event_type: str = "ThingCreateEvent", **resource: object) -> Envelope:
    return Envelope(event_type=event_type, payload={"thing": {"id": "T-1", **resource}}, entity_key="T-1")


def delivered(envelope: Envelope, produced: datetime | None = None) -> Delivery:
    message = encode(envelope, TOPIC, produced_at=produced)
    return Delivery(message=message, partition=0, offset=0, timestamp=datetime.now(UTC))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_published_events_are_counted_per_topic_and_type() -> None:
    metrics = Metrics()
    observer = MetricsObserver(metrics)
    messages = [encode(thing(), TOPIC), encode(thing(), TOPIC), encode(thing("ThingDeleteEvent"), "other")]
    observer.published(messages)
    observer.published(messages[:1])
    created = {"topic": TOPIC, "event_type": "ThingCreateEvent"}
    assert value(metrics, "strowger_events_published_total", **created) == 3
    assert (
        value(metrics, "strowger_events_published_total", topic="other", event_type="ThingDeleteEvent") == 1
    )


def test_an_applied_event_observes_handler_and_end_to_end_latency() -> None:
    metrics = Metrics()
    observer = MetricsObserver(metrics)
    envelope = thing()
    produced = datetime.now(UTC) - timedelta(seconds=3)
    observer.handled("billing", delivered(envelope, produced), envelope, 0.25, APPLIED)
    labels = {"consumer": "billing", "topic": TOPIC, "event_type": "ThingCreateEvent", "outcome": APPLIED}
    assert value(metrics, "strowger_events_handled_total", **labels) == 1
    assert value(metrics, "strowger_handler_latency_seconds_sum", consumer="billing") == pytest.approx(0.25)
    end_to_end = value(metrics, "strowger_end_to_end_latency_seconds_sum", consumer="billing")
    assert 3.0 <= end_to_end < 60.0
    assert value(metrics, "strowger_end_to_end_latency_seconds_bucket", consumer="billing", le="2.5") == 0


def test_a_duplicate_is_counted_but_not_timed() -> None:
    metrics = Metrics()
    envelope = thing()
    MetricsObserver(metrics).handled("billing", delivered(envelope), envelope, 0.0, DUPLICATE)
    labels = {"consumer": "billing", "topic": TOPIC, "event_type": "ThingCreateEvent", "outcome": DUPLICATE}
    assert value(metrics, "strowger_events_handled_total", **labels) == 1
    assert value(metrics, "strowger_handler_latency_seconds_count", consumer="billing") == 0


def test_failures_dead_letters_and_schema_violations_are_counted() -> None:
    metrics = Metrics()
    observer = MetricsObserver(metrics)
    envelope = thing()
    delivery = delivered(envelope)
    observer.failed("billing", delivery, envelope, 0.5, RuntimeError("boom"))
    observer.dead_lettered("billing", delivery, "RuntimeError")
    observer.dead_lettered("billing", delivery, "SchemaViolation")
    base = {"consumer": "billing", "topic": TOPIC, "event_type": "ThingCreateEvent"}
    assert value(metrics, "strowger_events_handled_total", **base, outcome="failed") == 1
    assert value(metrics, "strowger_events_handled_total", **base, outcome="rejected") == 1
    assert value(metrics, "strowger_dead_lettered_total", consumer="billing", error_type="RuntimeError") == 1
    violations = {"consumer": "billing", "event_type": "ThingCreateEvent"}
    assert value(metrics, "strowger_schema_violations_total", **violations) == 1


def test_label_children_are_created_once() -> None:
    observer = MetricsObserver(Metrics())
    envelope = thing()
    for _ in range(3):
        observer.handled("billing", delivered(envelope), envelope, 0.01, APPLIED)
    assert len(observer._handled) == 1 and len(observer._handler_latency) == 1


def test_produced_at_reads_the_header_and_tolerates_garbage() -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = encode(thing(), TOPIC, produced_at=moment)
    assert produced_at(message) == moment.timestamp()
    garbled = type(message)(message.topic, message.key, {Header.PRODUCED_AT: "yesterday"}, message.value)
    assert produced_at(garbled) is None
    assert is_null(NULL_OBSERVER) and not is_null(MetricsObserver(Metrics()))
    assert format_time(moment)  # the header format is the envelope's own


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(tracing.TracingSettings(), component="test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def test_an_emitted_event_gets_a_child_of_the_current_span(spans: InMemorySpanExporter) -> None:
    cause = tracing.stamp(thing(), TOPIC)
    with tracing.consume_span(cause, "som", TOPIC) as consuming:
        emitted = trace_emitted(cause.caused("ThingUpdateEvent", {"thing": {"id": "T-1"}}), TOPIC)
    consume_context = consuming.get_span_context()
    [publish] = [
        s for s in spans.get_finished_spans() if s.parent and s.parent.span_id == consume_context.span_id
    ]
    assert emitted.traceparent.startswith(
        f"00-{consume_context.trace_id:032x}-{publish.context.span_id:016x}-"
    )
    assert emitted.traceparent != cause.traceparent


def test_outside_any_span_an_emitted_event_keeps_its_causes_trace(spans: InMemorySpanExporter) -> None:
    cause = tracing.stamp(thing(), TOPIC)
    emitted = trace_emitted(cause.caused("ThingUpdateEvent", {"thing": {"id": "T-1"}}), TOPIC)
    assert emitted.traceparent == cause.traceparent
    fresh = trace_emitted(thing(), TOPIC)  # no trace yet: it starts one
    assert fresh.traceparent.startswith("00-") and fresh.traceparent != cause.traceparent


def test_the_validator_checks_known_types_and_lets_unknown_ones_pass() -> None:
    validator = SchemaValidator.from_schemas({("ThingCreateEvent", 1): SCHEMA})
    validator.check(thing())
    validator.check(Envelope(event_type="AllocateResources", payload={"x": 1}, entity_key="k"))
    broken = Envelope(event_type="ThingCreateEvent", payload={"other": {"id": "T-1"}}, entity_key="T-1")
    with pytest.raises(SchemaViolation, match="ThingCreateEvent version 1"):
        validator.check(broken)
    with pytest.raises(SchemaViolation, match="version 2"):
        validator.check(Envelope(event_type="ThingCreateEvent", payload={}, entity_key="k", schema_version=2))
    message = encode(broken, TOPIC)
    with pytest.raises(SchemaViolation):
        validator.check_message(message, broken)


def test_a_strict_validator_refuses_types_without_a_schema() -> None:
    validator = SchemaValidator.from_schemas({("ThingCreateEvent", 1): SCHEMA}, strict=True)
    validator.check(thing())
    with pytest.raises(SchemaViolation, match="no schema registered for event type AllocateResources"):
        validator.check(Envelope(event_type="AllocateResources", payload={"x": 1}, entity_key="k"))
    assert validator.knows("ThingCreateEvent") and not validator.knows("AllocateResources")
