"""The sampler's gauges and the alerts over them, under induced conditions, end to end.

Each test makes a real condition on the embedded bus over SQLite (a stopped consumer, a
failing consumer, a stalled outbox, a stuck saga, a burst of compensations, a slow saga),
lets :class:`PlatformSampler` read it into the Prometheus gauges and the
:class:`AlertMonitor` turn it into ``AlertFiredEvent`` s, then removes the condition and
sees the alert resolve once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import Consumer, ConsumerRunner, UnitOfWork
from strowger.errors import PermanentError
from strowger.events.envelope import Category, Envelope, encode
from strowger.events.topics import Topic
from strowger.ops.alerts import ALERT_FIRED, ALERT_RESOLVED, AlertEngine, AlertMonitor, AlertSettings
from strowger.ops.metrics import Metrics
from strowger.ops.saga_metrics import SagaMetrics
from strowger.ops.sampler import PlatformSampler
from strowger.saga import SAGA_TABLES, SagaEngine, SagaRegistry
from strowger.store.db import Database, Transaction
from strowger.store.deadletters import PARKED_TABLES, DeadLetterFilter, DeadLetterQueue
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox
from tests.conftest import unique
from tests.contract.saga_contract import TOY, Clock, FakeSink

pytestmark = pytest.mark.integration


@dataclass
class RecordingSink:
    """The alert events that committed, as (event type, alert name)."""

    events: list[tuple[str, str]] = field(default_factory=list)

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        alert = envelope.payload["alert"]["name"]
        tx.on_commit(lambda: self.events.append((envelope.event_type, alert)))


@pytest.fixture
async def bus(sqlite_db: Database) -> AsyncIterator[EmbeddedBus]:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await sqlite_db.create_tables(INBOX_TABLES, OUTBOX_TABLES, PARKED_TABLES, SAGA_TABLES)
    yield bus
    await bus.stop()


def sampler(
    database: Database, bus: EmbeddedBus, runners: list[ConsumerRunner], **options: object
) -> tuple[PlatformSampler, Metrics]:
    metrics = Metrics()
    return PlatformSampler(database, bus, metrics, runners, **options), metrics  # type: ignore[arg-type]


def monitor(
    database: Database, source: PlatformSampler, **settings: object
) -> tuple[AlertMonitor, RecordingSink]:
    sink = RecordingSink()
    engine = AlertEngine.from_settings(AlertSettings(resolve_after_seconds=0, **settings))  # type: ignore[arg-type]
    return AlertMonitor(database, source, sink, engine), sink


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def new_topic(bus: EmbeddedBus) -> str:
    name = unique("sampled")
    await bus.ensure_topics([Topic(name, Category.DOMAIN, partitions=1)])
    return name


def thing(key: str) -> Envelope:
    return Envelope(event_type="ThingChangeEvent", payload={"thing": {"id": key}}, entity_key=key)


async def publish(bus: EmbeddedBus, topic: str, count: int) -> None:
    await bus.publish([encode(thing(f"T-{n}"), topic) for n in range(count)])


async def test_a_stopped_consumer_shows_lag_that_grows_then_fires_and_resolves(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    async def handle(envelope: Envelope, uow: UnitOfWork) -> None:
        pass

    topic = await new_topic(bus)
    runner = ConsumerRunner(Consumer(name=unique("stopped"), topics=(topic,), handler=handle), bus, sqlite_db)
    window = timedelta(seconds=1)
    source, metrics = sampler(sqlite_db, bus, [runner], lag_window=window)
    alerts, sink = monitor(sqlite_db, source, lag_growth_window_seconds=window.total_seconds())
    group = {"topic": topic, "group": runner.name}

    growing = []
    for _ in range(8):  # the consumer never runs: every sample, 1/5 of the window apart, sees more waiting
        await publish(bus, topic, 2)
        await alerts.check()
        growing.append(gauge(metrics, "strowger_consumer_lag_growing", **group))
        await asyncio.sleep(window.total_seconds() / 5)
    assert gauge(metrics, "strowger_consumer_lag", partition="0", **group) == 16
    assert growing[0] == 0 and 1 in growing  # not at once: only once the samples cover the window
    assert sink.events == [(ALERT_FIRED, "ConsumerLagGrowing")]

    subscriber = bus.subscriber(runner.name, (topic,))  # the consumer comes back and catches up
    await subscriber.start()
    try:
        received = []
        for _ in range(50):
            received.extend(await subscriber.fetch(100, 0.2))
            if len(received) >= 16:
                break
        await runner.process(subscriber, received)
    finally:
        await subscriber.stop()
    await alerts.check()
    assert gauge(metrics, "strowger_consumer_lag", partition="0", **group) == 0
    assert gauge(metrics, "strowger_consumer_lag_growing", **group) == 0
    assert sink.events == [(ALERT_FIRED, "ConsumerLagGrowing"), (ALERT_RESOLVED, "ConsumerLagGrowing")]


async def test_a_failing_consumer_shows_dead_letter_depth_fires_and_resolves_on_discard(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    async def refuse(envelope: Envelope, uow: UnitOfWork) -> None:
        raise PermanentError(f"cannot apply {envelope.entity_key}")

    topic = await new_topic(bus)
    runner = ConsumerRunner(Consumer(name=unique("failing"), topics=(topic,), handler=refuse), bus, sqlite_db)
    source, metrics = sampler(sqlite_db, bus, [runner])
    alerts, sink = monitor(sqlite_db, source)
    subscriber = bus.subscriber(runner.name, (topic,))
    await subscriber.start()
    try:
        await publish(bus, topic, 2)
        received = []
        for _ in range(50):
            received.extend(await subscriber.fetch(100, 0.2))
            if len(received) >= 2:
                break
        await runner.process(subscriber, received)
    finally:
        await subscriber.stop()

    await alerts.check()
    labels = {"consumer": runner.name, "error_type": "PermanentError"}
    assert gauge(metrics, "strowger_dead_letter_depth", **labels) == 2
    assert sink.events == [(ALERT_FIRED, "DeadLetters")]

    queue = DeadLetterQueue(sqlite_db)
    for letter in await queue.find(DeadLetterFilter(consumer=runner.name)):
        await queue.discard(letter.id)
    await alerts.check()
    assert gauge(metrics, "strowger_dead_letter_depth", **labels) is None  # gone, not a stale 2
    assert sink.events == [(ALERT_FIRED, "DeadLetters"), (ALERT_RESOLVED, "DeadLetters")]


async def test_a_stalled_outbox_shows_its_backlog_and_age_and_fires(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    topic = await new_topic(bus)
    async with sqlite_db.transaction() as tx:
        await Outbox().add(tx, [encode(thing("T-1"), topic), encode(thing("T-2"), topic)])
        # The relay is down: the rows were written five minutes ago and are still there.
        await tx.execute("UPDATE outbox SET created_at = created_at - 300")
    source, metrics = sampler(sqlite_db, bus, [])
    alerts, sink = monitor(sqlite_db, source, outbox_max_age_seconds=60)
    await alerts.check()
    assert gauge(metrics, "strowger_outbox_backlog") == 2
    assert (gauge(metrics, "strowger_outbox_oldest_age_seconds") or 0) >= 300
    assert sink.events == [(ALERT_FIRED, "OutboxStalled")]

    async with sqlite_db.transaction() as tx:  # the relay catches up
        await tx.execute("UPDATE outbox SET published_at = created_at + 301")
    await alerts.check()
    assert (
        gauge(metrics, "strowger_outbox_backlog"),
        gauge(metrics, "strowger_outbox_oldest_age_seconds"),
    ) == (0, 0)
    assert sink.events == [(ALERT_FIRED, "OutboxStalled"), (ALERT_RESOLVED, "OutboxStalled")]


# --- sagas -----------------------------------------------------------------------------------------


class Sagas:
    """The toy saga on a clock that runs a while behind the real one (the sampler reads real time)."""

    def __init__(self, database: Database, metrics: Metrics, minutes_ago: float) -> None:
        self.database, self.sink = database, FakeSink()
        self.clock = Clock(datetime.now(UTC) - timedelta(minutes=minutes_ago))
        self.engine = SagaEngine(
            SagaRegistry([TOY]), self.sink, clock=self.clock, observer=SagaMetrics(metrics)
        )

    async def start(self, saga_id: str) -> None:
        async with self.database.transaction() as tx:
            await self.engine.start(tx, "toy", {"service": saga_id, "orderType": "add"}, saga_id=saga_id)

    async def reply(self, saga_id: str, to: str, suffix: str = "Done", **payload: object) -> None:
        [command] = [e for _, e in self.sink.sent if e.event_type == to and e.extra["sagaId"] == saga_id][-1:]
        async with self.database.transaction() as tx:
            result = await self.engine.handle_reply(tx, command.caused(f"{to}{suffix}", dict(payload)))
            assert result.applied

    async def complete(self, saga_id: str, seconds: float = 1) -> None:
        await self.start(saga_id)
        for action in ("Reserve", "Activate", "Bill"):
            self.clock.advance(seconds / 3)
            await self.reply(saga_id, action)

    async def compensate(self, saga_id: str) -> None:
        await self.start(saga_id)
        await self.reply(saga_id, "Reserve")
        await self.reply(saga_id, "Activate", "Failed", error="port down", permanent=True)
        await self.reply(saga_id, "Release")


async def test_a_burst_of_compensations_fires_the_compensation_rate_alert(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    source, metrics = sampler(sqlite_db, bus, [], sagas=True)
    sagas = Sagas(sqlite_db, source.metrics, minutes_ago=5)
    alerts, sink = monitor(sqlite_db, source, compensation_min_sagas=10)
    for number in range(8):
        await sagas.complete(f"ok-{number}")
    for number in range(3):  # 3 of 11 = 27 %, over the 5 % default
        await sagas.compensate(f"bad-{number}")

    await alerts.check()
    assert sink.events == [(ALERT_FIRED, "SagaCompensationRateHigh")]
    [alert] = alerts.active_alerts()
    assert (alert.labels, alert.value) == ({"saga_type": "toy"}, pytest.approx(3 / 11))
    assert gauge(metrics, "strowger_compensations_total", saga_type="toy", reason="step activate failed") == 3
    failed = {"saga_type": "toy", "order_type": "add", "outcome": "failed"}
    assert gauge(metrics, "strowger_saga_duration_seconds_count", **failed) == 3


async def test_a_stuck_and_a_quarantined_saga_show_in_the_gauges_and_fire(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    source, metrics = sampler(sqlite_db, bus, [], sagas=True)
    sagas = Sagas(sqlite_db, metrics, minutes_ago=60)  # started an hour ago, long past every timeout
    alerts, sink = monitor(sqlite_db, source)
    await sagas.start("stuck")
    await sagas.reply("stuck", "Reserve")  # activate now waits for a reply that never comes
    await sagas.start("quarantined")
    await sagas.reply("quarantined", "Reserve")
    await sagas.reply("quarantined", "Activate", "Failed", error="port down", permanent=True)
    for _ in range(3):  # the compensation fails every time: an operator must act
        await sagas.reply("quarantined", "Release", "Failed", error="pool locked")
        sagas.clock.advance(2)
        async with sqlite_db.transaction() as tx:
            await sagas.engine.tick(tx)

    await alerts.check()
    assert gauge(metrics, "strowger_sagas_in_flight", saga_type="toy", step="activate") == 1
    assert gauge(metrics, "strowger_sagas_quarantined", saga_type="toy") == 1
    assert gauge(metrics, "strowger_sagas_stuck", saga_type="toy") == 1  # quarantined waits for an operator
    assert sink.events == [(ALERT_FIRED, "SagaStuck")]


async def test_a_saga_slower_than_twice_the_p95_of_its_type_fires(
    bus: EmbeddedBus, sqlite_db: Database
) -> None:
    source, metrics = sampler(sqlite_db, bus, [], sagas=True)
    sagas = Sagas(sqlite_db, metrics, minutes_ago=10)
    alerts, sink = monitor(sqlite_db, source, saga_slow_min_samples=5, disabled=frozenset({"SagaStuck"}))
    await sagas.start("slow")  # started ten minutes ago (sagas' clock), still running
    for number in range(5):
        await sagas.complete(f"fast-{number}", seconds=3)  # each takes 3 s

    await alerts.check()
    assert sink.events == [(ALERT_FIRED, "SagaSlow")]
    [alert] = alerts.active_alerts()
    assert alert.labels == {"saga_type": "toy"}
    assert alert.value >= 590  # the running saga's age, against 2 x 3 s
    assert (
        gauge(
            metrics,
            "strowger_saga_duration_seconds_count",
            saga_type="toy",
            order_type="add",
            outcome="completed",
        )
        == 5
    )
