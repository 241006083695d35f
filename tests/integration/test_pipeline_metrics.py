"""The instrumented pipeline on the embedded bus over SQLite: metrics under induced conditions,
one trace across publish → consume → emit → consume, and timeline hops in the handling transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.observe import MetricsObserver
from strowger.bus.port import Delivery, Subscriber
from strowger.bus.runtime import Consumer, ConsumerRunner, Handler, UnitOfWork, _BatchLog
from strowger.errors import PermanentError, ServiceUnavailable
from strowger.events.envelope import Category, Envelope, encode
from strowger.events.topics import Topic
from strowger.ops import tracing
from strowger.ops.metrics import Metrics
from strowger.ops.trace_timeline import TRACE_TABLES
from strowger.store.db import Database, TableSet
from strowger.store.deadletters import PARKED_TABLES
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique

pytestmark = pytest.mark.integration

EVENT = "ThingChangeEvent"


@pytest.fixture
async def bus(sqlite_db: Database) -> AsyncIterator[EmbeddedBus]:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await sqlite_db.create_tables(INBOX_TABLES, OUTBOX_TABLES, PARKED_TABLES, TRACE_TABLES)
    yield bus
    await bus.stop()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(tracing.TracingSettings(), component="test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


async def new_topic(bus: EmbeddedBus) -> str:
    name = unique("pipeline")
    await bus.ensure_topics([Topic(name, Category.DOMAIN, partitions=2)])
    return name


def thing(entity: str, seq: int, event_type: str = EVENT) -> Envelope:
    return Envelope(event_type=event_type, payload={"thing": {"id": entity, "seq": seq}}, entity_key=entity)


async def noop(envelope: Envelope, uow: UnitOfWork) -> None:
    pass


def runner_for(
    bus: EmbeddedBus,
    database: Database,
    topic: str,
    handler: Handler,
    metrics: Metrics | None = None,
    **options: object,
) -> ConsumerRunner:
    consumer = Consumer(name=unique("consumer"), topics=(topic,), handler=handler, retry_backoff=(0.1,))
    observer = MetricsObserver(metrics) if metrics else None
    extra = {"observer": observer} if observer else {}
    return ConsumerRunner(consumer, bus, database, **extra, **options)  # type: ignore[arg-type]


async def deliver(
    bus: EmbeddedBus, runner: ConsumerRunner, envelopes: Sequence[Envelope], topic: str
) -> None:
    """Publish ``envelopes`` and let ``runner`` process exactly those (one fetch loop, no background task)."""
    subscriber = bus.subscriber(runner.name, runner.consumer.topics)
    await subscriber.start()
    try:
        await bus.publish([encode(envelope, topic) for envelope in envelopes])
        await process_all(subscriber, runner, len(envelopes))
    finally:
        await subscriber.stop()


async def process_all(subscriber: Subscriber, runner: ConsumerRunner, count: int) -> None:
    received: list[Delivery] = []
    for _ in range(50):
        received.extend(await subscriber.fetch(100, 0.2))
        if len(received) >= count:
            break
    assert len(received) == count
    await runner.process(subscriber, received)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def handled(metrics: Metrics, runner: ConsumerRunner, topic: str, outcome: str) -> float:
    labels = {"consumer": runner.name, "topic": topic, "event_type": EVENT, "outcome": outcome}
    return sample(metrics, "strowger_events_handled_total", **labels)


async def test_a_slow_handler_shows_in_handler_and_end_to_end_latency(
    bus: EmbeddedBus, sqlite_db: Database, metrics: Metrics
) -> None:
    async def slow(envelope: Envelope, uow: UnitOfWork) -> None:
        await asyncio.sleep(0.15)

    topic = await new_topic(bus)
    runner = runner_for(bus, sqlite_db, topic, slow, metrics)
    await deliver(bus, runner, [thing("T-1", 1), thing("T-2", 1)], topic)
    assert handled(metrics, runner, topic, "applied") == 2
    assert sample(metrics, "strowger_handler_latency_seconds_count", consumer=runner.name) == 2
    assert sample(metrics, "strowger_handler_latency_seconds_sum", consumer=runner.name) >= 0.3
    fast = sample(metrics, "strowger_handler_latency_seconds_bucket", consumer=runner.name, le="0.1")
    assert fast == 0  # both took at least 0.15 s
    assert sample(metrics, "strowger_end_to_end_latency_seconds_count", consumer=runner.name) == 2
    assert sample(metrics, "strowger_end_to_end_latency_seconds_sum", consumer=runner.name) >= 0.15


async def test_a_redelivered_event_is_counted_as_a_duplicate(
    bus: EmbeddedBus, sqlite_db: Database, metrics: Metrics
) -> None:
    topic = await new_topic(bus)
    runner = runner_for(bus, sqlite_db, topic, noop, metrics)
    event = thing("T-1", 1)
    await deliver(bus, runner, [event], topic)
    await deliver(bus, runner, [event], topic)  # the same eventId again
    assert handled(metrics, runner, topic, "applied") == 1
    assert handled(metrics, runner, topic, "duplicate") == 1


async def test_a_failing_consumer_counts_failures_and_dead_letters(
    bus: EmbeddedBus, sqlite_db: Database, metrics: Metrics
) -> None:
    async def picky(envelope: Envelope, uow: UnitOfWork) -> None:
        if envelope.entity_key == "T-BAD":
            raise PermanentError("cannot apply this thing")
        if envelope.entity_key == "T-LATER":
            raise ServiceUnavailable("downstream is away")

    topic = await new_topic(bus)
    runner = runner_for(bus, sqlite_db, topic, picky, metrics)
    await deliver(bus, runner, [thing("T-1", 1), thing("T-BAD", 1), thing("T-LATER", 1)], topic)
    assert handled(metrics, runner, topic, "applied") == 1
    assert handled(metrics, runner, topic, "failed") == 2
    dead = {"consumer": runner.name, "error_type": "PermanentError"}
    assert sample(metrics, "strowger_dead_lettered_total", **dead) == 1
    rows = await sqlite_db.fetchall(
        "SELECT entity_key, status, error_type FROM parked WHERE consumer = ? ORDER BY entity_key",
        (runner.name,),
    )
    assert [tuple(row) for row in rows] == [
        ("T-BAD", "dead", "PermanentError"),
        ("T-LATER", "retrying", "ServiceUnavailable"),
    ]
    await asyncio.sleep(0.15)  # the retry is due; it fails again and, out of backoff, dies
    [parked_id] = [
        int(r[0]) for r in await sqlite_db.fetchall("SELECT id FROM parked WHERE status = 'retrying'")
    ]
    assert await runner.retry(parked_id) == 1
    assert handled(metrics, runner, topic, "failed") == 3
    unavailable = {"consumer": runner.name, "error_type": "ServiceUnavailable"}
    assert sample(metrics, "strowger_dead_lettered_total", **unavailable) == 1


async def test_the_relay_counts_what_it_publishes_per_topic_and_type(
    bus: EmbeddedBus, sqlite_db: Database, metrics: Metrics
) -> None:
    topic, other = await new_topic(bus), await new_topic(bus)
    outbox = Outbox()
    async with sqlite_db.transaction() as tx:
        await outbox.add(tx, [encode(thing("T-1", 1), topic), encode(thing("T-2", 1), topic)])
        await outbox.add(tx, [encode(thing("T-3", 1, "ThingDeleteEvent"), other)])
    relay = OutboxRelay(sqlite_db, bus, outbox, retention=None, observer=MetricsObserver(metrics))
    assert await relay.relay_once() == 3
    assert sample(metrics, "strowger_events_published_total", topic=topic, event_type=EVENT) == 2
    assert sample(metrics, "strowger_events_published_total", topic=other, event_type="ThingDeleteEvent") == 1


async def test_one_trace_follows_publish_consume_emit_consume(
    bus: EmbeddedBus, sqlite_db: Database, spans: InMemorySpanExporter
) -> None:
    first, second = await new_topic(bus), await new_topic(bus)
    outbox = Outbox()
    seen: list[Envelope] = []

    async def forward(envelope: Envelope, uow: UnitOfWork) -> None:
        await uow.emit(envelope.caused("ThingForwardedEvent", dict(envelope.payload)), second)

    async def record(envelope: Envelope, uow: UnitOfWork) -> None:
        seen.append(envelope)

    upstream = runner_for(bus, sqlite_db, first, forward, outbox=outbox)
    downstream = runner_for(bus, sqlite_db, second, record)
    downstream_subscriber = bus.subscriber(downstream.name, (second,))
    await downstream_subscriber.start()
    try:
        origin = tracing.stamp(thing("T-1", 1), first)  # as an API write stamps it
        await deliver(bus, upstream, [origin], first)
        assert await OutboxRelay(sqlite_db, bus, outbox, retention=None).relay_once() == 1
        await process_all(downstream_subscriber, downstream, 1)
    finally:
        await downstream_subscriber.stop()

    [forwarded] = seen
    assert forwarded.causation_id == origin.event_id
    finished = spans.get_finished_spans()
    publish_origin = producer_span(finished, origin.traceparent)
    consume_up = only(finished, SpanKind.CONSUMER, upstream.name)
    publish_forwarded = producer_span(finished, forwarded.traceparent)
    consume_down = only(finished, SpanKind.CONSUMER, downstream.name)
    assert consume_up.parent is not None and consume_up.parent.span_id == publish_origin.context.span_id
    assert publish_forwarded.parent is not None
    assert publish_forwarded.parent.span_id == consume_up.context.span_id
    assert (
        consume_down.parent is not None and consume_down.parent.span_id == publish_forwarded.context.span_id
    )
    trace_ids = {
        span.context.trace_id for span in (publish_origin, consume_up, publish_forwarded, consume_down)
    }
    assert len(trace_ids) == 1


def producer_span(spans: Sequence[ReadableSpan], traceparent: str) -> ReadableSpan:
    span_id = int(traceparent.split("-")[2], 16)
    [span] = [s for s in spans if s.context.span_id == span_id]
    assert span.kind is SpanKind.PRODUCER
    return span


def only(spans: Sequence[ReadableSpan], kind: SpanKind, group: str) -> ReadableSpan:
    attribute = "messaging.consumer.group.name"
    [span] = [s for s in spans if s.kind is kind and (s.attributes or {}).get(attribute) == group]
    return span


async def hops(database: Database, consumer: str) -> list[tuple[str, str]]:
    rows = await database.fetchall(
        "SELECT entity_key, outcome FROM trace_hop WHERE consumer = ? ORDER BY entity_key", (consumer,)
    )
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_the_timeline_gets_one_hop_per_event_with_its_outcome(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    async def picky(envelope: Envelope, uow: UnitOfWork) -> None:
        if envelope.entity_key == "T-BAD":
            raise PermanentError("no")

    topic = await new_topic(bus)
    runner = runner_for(bus, sqlite_db, topic, picky, timeline=True)
    # T-BAD fails in the fast path: that transaction (and its hops) rolls back and the
    # batch is redone one by one, so each event still has exactly one hop.
    await deliver(bus, runner, [thing("T-1", 1), thing("T-BAD", 1), thing("T-2", 1)], topic)
    assert await hops(sqlite_db, runner.name) == [("T-1", "applied"), ("T-2", "applied"), ("T-BAD", "dead")]
    quiet_topic = await new_topic(bus)
    silent = runner_for(bus, sqlite_db, quiet_topic, noop)  # timeline off: nothing recorded
    await deliver(bus, silent, [thing("T-3", 1)], quiet_topic)
    assert await hops(sqlite_db, silent.name) == []


async def test_timeline_hops_commit_and_roll_back_with_the_handlers_effects(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    async def remember(envelope: Envelope, uow: UnitOfWork) -> None:
        await uow.tx.execute("INSERT INTO outbox_probe (entity) VALUES (?)", (envelope.entity_key,))

    await sqlite_db.create_tables(PROBE)
    topic = await new_topic(bus)
    runner = runner_for(bus, sqlite_db, topic, remember, timeline=True)
    subscriber = bus.subscriber(runner.name, (topic,))
    await subscriber.start()
    try:
        await bus.publish([encode(thing("T-1", 1), topic)])
        batch = await subscriber.fetch(10, 2.0)
        with pytest.raises(RuntimeError, match="crash before commit"):
            async with sqlite_db.transaction() as tx:
                done = _BatchLog()
                await runner._apply_batch(tx, batch, done)
                await runner._close_batch(tx, done)
                assert (
                    len(await tx.fetchall("SELECT 1 FROM trace_hop WHERE consumer = ?", (runner.name,))) == 1
                )
                raise RuntimeError("crash before commit")
        assert await hops(sqlite_db, runner.name) == []
        assert await sqlite_db.fetchall("SELECT entity FROM outbox_probe") == []
        await runner.process(subscriber, batch)  # the redelivery commits both
    finally:
        await subscriber.stop()
    assert await hops(sqlite_db, runner.name) == [("T-1", "applied")]
    assert [tuple(r) for r in await sqlite_db.fetchall("SELECT entity FROM outbox_probe")] == [("T-1",)]


PROBE = TableSet(
    name="outbox_probe",
    sqlite=["CREATE TABLE IF NOT EXISTS outbox_probe (entity TEXT NOT NULL)"],
    postgresql=["CREATE TABLE IF NOT EXISTS outbox_probe (entity TEXT NOT NULL)"],
)
