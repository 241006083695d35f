"""Prometheus metrics for one Strowger process.

Counters and histograms are updated on the hot path (publish, handle); gauges
that need a database or broker query (dead-letter depth, outbox backlog,
consumer lag, projection lag) are refreshed by a sampler task every few
seconds, because a Prometheus scrape is synchronous and must stay cheap.
Each platform gets its own registry, so tests and several platforms in one
process never share figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


class Metrics:
    """Every metric Strowger exports, in one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_published = Counter(
            "strowger_events_published", "Events published", ["topic", "event_type"], registry=r
        )
        self.events_handled = Counter(
            "strowger_events_handled",
            "Events handled by a consumer",
            ["consumer", "topic", "event_type", "outcome"],
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "strowger_end_to_end_latency_seconds",
            "producedAt to handled, per consumer",
            ["consumer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handler_latency = Histogram(
            "strowger_handler_latency_seconds",
            "Handler run time, per consumer",
            ["consumer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "strowger_consumer_lag",
            "Messages a group has not committed",
            ["topic", "partition", "group"],
            registry=r,
        )
        self.consumer_lag_growing = Gauge(
            "strowger_consumer_lag_growing",
            "1 if the group's lag grew over the window",
            ["topic", "group"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "strowger_dead_letter_depth", "Dead letters waiting", ["consumer", "error_type"], registry=r
        )
        self.outbox_backlog = Gauge("strowger_outbox_backlog", "Outbox rows not yet published", registry=r)
        self.outbox_oldest_age = Gauge(
            "strowger_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", registry=r
        )
        self.projection_lag = Gauge(
            "strowger_projection_lag", "Events a projection has not applied yet", ["projection"], registry=r
        )
        self.saga_duration = Histogram(
            "strowger_saga_duration_seconds",
            "Saga start to terminal state",
            ["saga_type", "order_type", "outcome"],
            buckets=SAGA_BUCKETS,
            registry=r,
        )
        self.sagas_in_flight = Gauge(
            "strowger_sagas_in_flight", "Running sagas per step", ["saga_type", "step"], registry=r
        )
        self.sagas_stuck = Gauge(
            "strowger_sagas_stuck", "Sagas past their step timeout", ["saga_type"], registry=r
        )
        self.sagas_quarantined = Gauge(
            "strowger_sagas_quarantined", "Sagas waiting for an operator", ["saga_type"], registry=r
        )
        self.compensations = Counter(
            "strowger_compensations", "Sagas compensated", ["saga_type", "reason"], registry=r
        )
        self.step_latency = Histogram(
            "strowger_saga_step_latency_seconds",
            "Command sent to reply received, per saga step",
            ["saga_type", "step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.dead_lettered = Counter(
            "strowger_dead_lettered",
            "Deliveries a consumer gave up on (dead-lettered), by error type",
            ["consumer", "error_type"],
            registry=r,
        )
        self.schema_violations = Counter(
            "strowger_schema_violations",
            "Events a consumer received that failed schema validation (sent to its validation DLQ)",
            ["consumer", "event_type"],
            registry=r,
        )
        self.schema_violations_produced = Counter(
            "strowger_schema_violations_produced",
            "Events a producer tried to emit that failed schema validation (refused, not written)",
            ["producer", "event_type"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
