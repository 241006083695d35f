"""The event pipeline's observer port: what the relay and the consumer runtime report as they work.

The runtime and the relay call a :class:`PipelineObserver` once per event (and
once per published batch) AFTER the transaction that did the work committed, so
a rolled-back attempt is never counted twice. :class:`NullObserver` (the
default) does nothing, and the runtime skips even the timing when it is given
one, so tests and benches that do not observe pay nothing. :class:`MetricsObserver`
feeds the Prometheus metrics of :mod:`strowger.ops.metrics`, caching each label
child so the hot path costs a dict lookup and an increment.

Emitted events get a traceparent of their own PRODUCER span (:func:`trace_emitted`),
child of the span current where they are emitted: the consumer runtime's CONSUMER
span, or the API's SERVER span. So a causation chain (API → event → handler →
event → handler) is one trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from strowger.bus.port import Delivery
from strowger.events.envelope import Envelope, Header, Message, parse_time
from strowger.ops import tracing
from strowger.ops.metrics import Metrics

APPLIED = "applied"
DUPLICATE = "duplicate"
FAILED = "failed"
REJECTED = "rejected"  # dead on arrival: not decodable, or not valid against its schema
SCHEMA_VIOLATION = "SchemaViolation"  # the error type of a validation dead letter


class PipelineObserver(Protocol):
    """Told about every event the pipeline publishes and handles (after the work committed)."""

    def published(self, messages: Sequence[Message]) -> None:
        """``messages`` were handed to the bus by the outbox relay (confirmed, or in the same tx)."""

    def handled(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, outcome: str
    ) -> None:
        """``consumer`` applied the event (``outcome`` applied, ``seconds`` in its handler) or
        recognised a duplicate (``outcome`` duplicate, ``seconds`` 0)."""

    def failed(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, error: BaseException
    ) -> None:
        """``consumer``'s handler raised ``error`` after ``seconds``; its effects were rolled back."""

    def dead_lettered(self, consumer: str, delivery: Delivery, error_type: str) -> None:
        """``consumer`` gave up on the delivery: it is in its dead letters with ``error_type``."""


class NullObserver:
    """Observes nothing (the default: the runtime then does not even time handlers)."""

    def published(self, messages: Sequence[Message]) -> None:
        pass

    def handled(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, outcome: str
    ) -> None:
        pass

    def failed(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, error: BaseException
    ) -> None:
        pass

    def dead_lettered(self, consumer: str, delivery: Delivery, error_type: str) -> None:
        pass


NULL_OBSERVER = NullObserver()


def is_null(observer: PipelineObserver) -> bool:
    return isinstance(observer, NullObserver)


class MetricsObserver:
    """Updates the pipeline's Prometheus metrics; label children are created once and cached."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._published: dict[tuple[str, str], Counter] = {}
        self._handled: dict[tuple[str, str, str, str], Counter] = {}
        self._handler_latency: dict[str, Histogram] = {}
        self._end_to_end: dict[str, Histogram] = {}
        self._dead: dict[tuple[str, str], Counter] = {}
        self._violations: dict[tuple[str, str], Counter] = {}

    def published(self, messages: Sequence[Message]) -> None:
        for message in messages:
            key = (message.topic, message.event_type)
            child = self._published.get(key)
            if child is None:
                child = self._published[key] = self.metrics.events_published.labels(*key)
            child.inc()

    def handled(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, outcome: str
    ) -> None:
        self._count(consumer, delivery.message, outcome)
        if outcome != APPLIED:
            return
        self._histogram(self._handler_latency, self.metrics.handler_latency, consumer).observe(seconds)
        produced = produced_at(delivery.message)
        if produced is not None:
            transit = max(0.0, datetime.now(UTC).timestamp() - produced)
            self._histogram(self._end_to_end, self.metrics.end_to_end_latency, consumer).observe(transit)

    def failed(
        self, consumer: str, delivery: Delivery, envelope: Envelope, seconds: float, error: BaseException
    ) -> None:
        self._count(consumer, delivery.message, FAILED)
        self._histogram(self._handler_latency, self.metrics.handler_latency, consumer).observe(seconds)

    def dead_lettered(self, consumer: str, delivery: Delivery, error_type: str) -> None:
        event_type = delivery.message.event_type
        self._labelled(self._dead, self.metrics.dead_lettered, (consumer, error_type)).inc()
        if error_type == SCHEMA_VIOLATION:
            self._labelled(self._violations, self.metrics.schema_violations, (consumer, event_type)).inc()
            self._count(consumer, delivery.message, REJECTED)
        elif error_type == "MalformedMessage":
            self._count(consumer, delivery.message, REJECTED)

    def _count(self, consumer: str, message: Message, outcome: str) -> None:
        key = (consumer, message.topic, message.event_type, outcome)
        child = self._handled.get(key)
        if child is None:
            child = self._handled[key] = self.metrics.events_handled.labels(*key)
        child.inc()

    @staticmethod
    def _histogram(cache: dict[str, Histogram], metric: Histogram, consumer: str) -> Histogram:
        child = cache.get(consumer)
        if child is None:
            child = cache[consumer] = metric.labels(consumer)
        return child

    @staticmethod
    def _labelled(cache: dict[tuple[str, str], Counter], metric: Counter, key: tuple[str, str]) -> Counter:
        child = cache.get(key)
        if child is None:
            child = cache[key] = metric.labels(*key)
        return child


def produced_at(message: Message) -> float | None:
    """The ``producedAt`` header as a POSIX timestamp, or None when absent or unreadable."""
    header = message.headers.get(Header.PRODUCED_AT)
    if not header:
        return None
    try:
        return parse_time(header).timestamp()
    except ValueError:
        return None


def trace_emitted(envelope: Envelope, topic: str) -> Envelope:
    """``envelope`` with the traceparent of its own PRODUCER span (:func:`emitted_traceparent`)."""
    traceparent = emitted_traceparent(envelope, topic)
    return envelope if traceparent == envelope.traceparent else envelope.evolve(traceparent=traceparent)


def emitted_traceparent(envelope: Envelope, topic: str) -> str:
    """The traceparent of ``envelope``'s own PRODUCER span on ``topic``, child of the current span.

    Outside any span, an envelope that already names a trace (``caused()`` copies its
    cause's) keeps it rather than starting an unrelated trace.
    """
    if envelope.traceparent and not trace.get_current_span().get_span_context().is_valid:
        return envelope.traceparent
    return tracing.traceparent_for_publish(topic, envelope.event_type, envelope.entity_key)
