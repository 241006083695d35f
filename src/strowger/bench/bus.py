"""`strowger bench bus`: Strowger's event pipeline measured beside the raw broker client, same run.

Strowger's figures (the bus under test, the database holding inbox, effects and outbox):

* ``consume_per_s`` — N events already on the bus, consumed by a :class:`ConsumerRunner`
  whose *batch handler* writes one effect row per event (one ``executemany`` per batch):
  decode, inbox, effects, commit, ack. Timed from the first delivery handled to the last
  batch acknowledged.
* ``consume_per_event_handler_per_s`` — the same events read again by a second group
  whose per-event handler writes each effect row with its own ``execute``.
* ``latency_p50_ms`` / ``latency_p99_ms`` — publish→handled: events published one by one at
  :data:`PACED_RATE`/s (the raw peer's paced rate), or at half the measured throughput if
  that is lower (below saturation, so queueing does not swamp the figure), while the
  runner consumes; the send time travels in the payload and the handler measures it.
* ``relay_per_s`` — N rows already committed in the outbox, published to the bus and
  marked by :class:`OutboxRelay` (its own ``relay_once`` loop).
* ``relay_latency_p50_ms`` / ``relay_latency_p99_ms`` — commit→published: paced writers
  commit one outbox row per transaction at :data:`RELAY_PACED_RATE`/s (up to
  :data:`RELAY_PACED_WRITERS` at once) while the relay runs; latency = when the relay
  reported the row published (its pipeline observer, told after the bus confirmed and the
  mark committed) - the writer's clock just after its commit returned.
  ``relay_paced_rate_reached`` is the commit rate the writers actually reached; the target
  counts as met only if it is within 5% of the paced rate.

The peer, in the same run: confluent-kafka's own produce/consume loops
(:mod:`strowger.bench.raw_kafka`), aio-pika's (:mod:`strowger.bench.raw_rabbitmq`), or for
the embedded bus a plain read loop over the same ``bus_log`` table with the bare driver.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from strowger.bench.floors import LOG_PAGE
from strowger.bench.machine import machine_info
from strowger.bus.embedded import EmbeddedBus
from strowger.bus.port import Bus
from strowger.bus.runtime import Consumer, ConsumerRunner, UnitOfWork
from strowger.events.envelope import Category, Envelope, Message, encode
from strowger.events.topics import Topic
from strowger.store.db import Database, TableSet
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from strowger.store.postgres import PostgresDatabase, to_psycopg
from strowger.store.sqlite import SqliteDatabase

Progress = Callable[[str, float], None]

BACKENDS = ("embedded", "kafka", "rabbitmq")
DATABASES = ("sqlite", "postgres")
PARTITIONS = 6
KEYS = 1000  # distinct entity (order) keys, spread over the partitions
PUBLISH_BATCH = 500  # events per publish while filling the bus
PACED_EVENTS = 2_000
PACED_RATE = 2_000.0  # events/s of the publish→handled phase, as the raw peers' paced phase
RELAY_PACED_RATE = 1_000.0  # outbox commits/s of the commit→published phase
RELAY_PACED_SECONDS = 3.0
CONSUMER_BATCH = 500
TARGET_CONSUME_RATIO = 0.5
TARGET_RELAY_PER_S = 20_000.0
TARGET_RELAY_P99_MS = 20.0
DEFAULT_URLS = {
    "postgres": "postgresql://strowger:strowger@127.0.0.1:5432/strowger",
    "kafka": "kafka://127.0.0.1:9092",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
}

EFFECT_TABLES = TableSet(
    name="bench-effects",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS bench_effects "
        "(consumer TEXT NOT NULL, event_id TEXT NOT NULL, order_id TEXT NOT NULL, state TEXT NOT NULL, "
        "PRIMARY KEY (consumer, event_id))"
    ],
    postgresql=[
        "CREATE TABLE IF NOT EXISTS bench_effects "
        "(consumer TEXT NOT NULL, event_id TEXT NOT NULL, order_id TEXT NOT NULL, state TEXT NOT NULL, "
        "PRIMARY KEY (consumer, event_id))"
    ],
)


def service_url(name: str) -> str:
    """Where a service is: ``STROWGER_BENCH_<NAME>_URL``, else the local default."""
    return os.environ.get(f"STROWGER_BENCH_{name.upper()}_URL", DEFAULT_URLS[name])


# -- figures ---------------------------------------------------------------------------------------


@dataclass
class StrowgerFigures:
    """Strowger's side of one run (None where a phase was not run)."""

    consume_per_s: float = 0.0  # batch handler
    consume_per_event_handler_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    relay_per_s: float = 0.0
    relay_latency_p50_ms: float = 0.0
    relay_latency_p99_ms: float = 0.0
    relay_paced_rate_reached: float = 0.0  # commits/s the paced writers reached (the target is at 1,000)
    paced_rate: float = 0.0  # of the publish→handled phase: the peer's, or half our throughput if lower
    fill_publish_per_s: float = 0.0  # bus.publish in batches while filling (not a target)
    message_bytes: int = 0


@dataclass
class PeerFigures:
    """The raw client's side; ``missing`` says why there is no figure (never a made-up one)."""

    client: str
    consume_per_s: float | None = None
    produce_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    missing: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        value = samples[0] if samples else 0.0
        return round(value, 2), round(value, 2)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return round(cuts[49], 2), round(cuts[98], 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- the events --------------------------------------------------------------------------------------


def _order_event(n: int, *, sent_ns: int = 0) -> Envelope:
    """A realistic TMF622 state-change event; ``sentNs`` carries the publish time when paced."""
    order_id = f"bench-order-{n % KEYS}"
    return Envelope(
        event_type="ProductOrderStateChangeEvent",
        payload={
            "productOrder": {
                "id": order_id,
                "href": f"/productOrderingManagement/v4/productOrder/{order_id}",
                "state": "inProgress",
                "@type": "ProductOrder",
                "sentNs": sent_ns,
            }
        },
        entity_key=order_id,
        category=Category.DOMAIN,
        correlation_id=f"bench-correlation-{n}",
        producer="bench",
        domain="ordering",
    )


def _messages(topic: str, first: int, count: int) -> list[Message]:
    return [encode(_order_event(n), topic) for n in range(first, first + count)]


# -- the environment: database, bus, topic -------------------------------------------------------------


@dataclass
class _Setup:
    database: Database
    bus: Bus
    topic: str
    sqlite_path: str | None
    schema: str | None


@asynccontextmanager
async def _database(db: str) -> AsyncIterator[tuple[Database, str | None, str | None]]:
    """A throw-away SQLite file or PostgreSQL schema, removed afterwards."""
    if db == "sqlite":
        directory = tempfile.mkdtemp(prefix="strowger-bench-bus-")
        path = os.path.join(directory, "bench.db")
        database: Database = SqliteDatabase(f"sqlite:///{path}")
        await database.open()
        try:
            yield database, path, None
        finally:
            await database.close()
            shutil.rmtree(directory, ignore_errors=True)
        return
    schema = f"bench_bus_{uuid.uuid4().hex[:10]}"
    database = PostgresDatabase(service_url("postgres"), schema=schema)
    await database.open()
    try:
        yield database, None, schema
    finally:
        async with database.transaction() as tx:
            await tx.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await database.close()


def _open_bus(backend: str, database: Database) -> Bus:
    if backend == "embedded":
        return EmbeddedBus("embedded://", database=database)
    if backend == "kafka":
        from strowger.bus.kafka import KafkaBus

        return KafkaBus(service_url("kafka"))
    from strowger.bus.rabbitmq import RabbitBus

    return RabbitBus(service_url("rabbitmq"))


async def _drop_topics(backend: str, bus: Bus, names: list[str]) -> None:
    """Remove the benchmark's topics from a shared broker (the embedded log goes with its database)."""
    if backend == "kafka":
        from confluent_kafka.admin import AdminClient

        from strowger.bus.kafka import bootstrap_servers

        admin = AdminClient({"bootstrap.servers": bootstrap_servers(service_url("kafka"))})
        for future in admin.delete_topics(names).values():
            await asyncio.wrap_future(future)
    elif backend == "rabbitmq":
        from strowger.bus.rabbitmq import RabbitBus

        assert isinstance(bus, RabbitBus)
        for name in names:
            await bus.delete_topic(name)


@asynccontextmanager
async def _environment(backend: str, db: str) -> AsyncIterator[tuple[Database, Bus, list[str]]]:
    """The database, the started bus, and a list the caller fills with topics to drop afterwards."""
    async with _database(db) as (database, _path, _schema):
        await database.create_tables(EFFECT_TABLES, OUTBOX_TABLES)
        bus = _open_bus(backend, database)
        await bus.start()
        topics: list[str] = []
        try:
            yield database, bus, topics
        finally:
            try:
                if topics:
                    await _drop_topics(backend, bus, topics)
            finally:
                await bus.stop()


async def _new_topic(bus: Bus, topics: list[str], kind: str) -> str:
    name = f"bench.bus.{kind}.{uuid.uuid4().hex[:10]}"
    await bus.ensure_topics([Topic(name, Category.DOMAIN, partitions=PARTITIONS)])
    topics.append(name)
    return name


# -- Strowger: consume → handle → commit ----------------------------------------------------------------


_EFFECT_INSERT = "INSERT INTO bench_effects (consumer, event_id, order_id, state) VALUES (?, ?, ?, ?)"


class _Timing:
    """What the handler and the acknowledgements saw, for the figures."""

    def __init__(self) -> None:
        self.first_handled: float | None = None
        self.acked = 0
        self.target = 0
        self.last_acked = 0.0
        self.reached = asyncio.Event()
        self.latencies_ms: list[float] = []

    def expect(self, count: int) -> None:
        self.acked, self.target = 0, count
        self.first_handled = None
        self.reached.clear()

    def _effect(self, envelope: Envelope, consumer: str) -> tuple[str, str, str, str]:
        """The effect row of one event (and its latency if it was paced)."""
        order = envelope.payload["productOrder"]
        sent_ns = int(order.get("sentNs") or 0)
        if sent_ns:
            self.latencies_ms.append((time.time_ns() - sent_ns) / 1e6)
        return (consumer, envelope.event_id, order["id"], order["state"])

    async def handle(self, envelope: Envelope, uow: UnitOfWork) -> None:
        """The per-event handler: one effect row per event, one statement each."""
        if self.first_handled is None:
            self.first_handled = time.perf_counter()
        await uow.tx.execute(_EFFECT_INSERT, self._effect(envelope, uow.consumer))

    async def handle_batch(self, envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
        """The batch handler: the same effect rows, one ``executemany`` for the batch."""
        if self.first_handled is None:
            self.first_handled = time.perf_counter()
        await uow.tx.executemany(_EFFECT_INSERT, [self._effect(e, uow.consumer) for e in envelopes])

    def acknowledged(self, count: int) -> None:
        self.acked += count
        self.last_acked = time.perf_counter()
        if self.acked >= self.target:
            self.reached.set()


class _TimedRunner(ConsumerRunner):
    """The stock runner; it only reports each acknowledged batch to the timing."""

    def __init__(self, timing: _Timing, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timing = timing

    async def _acknowledge(self, subscriber: Any, batch: Any) -> None:
        await super()._acknowledge(subscriber, batch)
        self.timing.acknowledged(len(batch))


async def _fill(bus: Bus, topic: str, events: int, progress: Progress, span: tuple[float, float]) -> float:
    """Publish ``events`` in batches; returns publish events/s."""
    started = time.perf_counter()
    for first in range(0, events, PUBLISH_BATCH):
        await bus.publish(_messages(topic, first, min(PUBLISH_BATCH, events - first)))
        progress("filling the bus", span[0] + (span[1] - span[0]) * first / events)
    return events / (time.perf_counter() - started)


PACED_IN_FLIGHT = 8  # publishes in flight at once: fewer than the database pool's connections


async def _publish_paced(bus: Bus, topic: str, count: int, rate: float) -> None:
    """One event per publish at ``rate``/s; publishes overlap as a busy producer's would.

    At most :data:`PACED_IN_FLIGHT` at once: when the database falls behind, events wait
    in the producer (their send time is already stamped, so the wait counts in the latency)
    instead of each holding a request for a pooled connection until the pool times out.
    """
    in_flight = asyncio.Semaphore(PACED_IN_FLIGHT)

    async def send(message: Message) -> None:
        async with in_flight:
            await bus.publish([message])

    pending: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for n in range(count):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        message = encode(_order_event(n, sent_ns=time.time_ns()), topic)
        pending.append(asyncio.create_task(send(message)))
    await asyncio.gather(*pending)


async def _strowger_pipeline(
    database: Database, bus: Bus, topic: str, events: int, progress: Progress, figures: StrowgerFigures
) -> None:
    figures.fill_publish_per_s = await _fill(bus, topic, events, progress, (0.0, 0.2))
    figures.message_bytes = len(_messages(topic, 0, 1)[0].value)
    timing = _Timing()
    timing.expect(events)
    batched = Consumer(
        name=f"bench.batch.{uuid.uuid4().hex[:10]}",
        topics=(topic,),
        batch_handler=timing.handle_batch,
        batch_size=CONSUMER_BATCH,
    )
    runner = _TimedRunner(timing, batched, bus, database, fetch_timeout=0.2)
    task = asyncio.create_task(runner.run(), name="the consumer runner")
    try:
        progress("Strowger: consume → handle → commit (batch handler)", 0.2)
        await _wait(timing.reached, task, 300)
        figures.consume_per_s = _rate(timing, events)
        progress("Strowger: paced publish → handled", 0.3)
        timing.expect(PACED_EVENTS)
        figures.paced_rate = round(min(PACED_RATE, figures.consume_per_s / 2), 1)
        await _publish_paced(bus, topic, PACED_EVENTS, figures.paced_rate)
        await _wait(timing.reached, task, 120)
        figures.latency_p50_ms, figures.latency_p99_ms = _percentiles(timing.latencies_ms)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    progress("Strowger: consume → handle → commit (per-event handler)", 0.4)
    figures.consume_per_event_handler_per_s = await _per_event_pipeline(
        database, bus, topic, events + PACED_EVENTS
    )
    await _check_effects(database, batched.name, events + PACED_EVENTS)


async def _per_event_pipeline(database: Database, bus: Bus, topic: str, events: int) -> float:
    """A second group reads the same events with a per-event handler; its events/s."""
    timing = _Timing()
    timing.expect(events)
    consumer = Consumer(
        name=f"bench.each.{uuid.uuid4().hex[:10]}",
        topics=(topic,),
        handler=timing.handle,
        batch_size=CONSUMER_BATCH,
    )
    runner = _TimedRunner(timing, consumer, bus, database, fetch_timeout=0.2)
    task = asyncio.create_task(runner.run(), name="the consumer runner")
    try:
        await _wait(timing.reached, task, 300)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await _check_effects(database, consumer.name, events)
    return _rate(timing, events)


def _rate(timing: _Timing, events: int) -> float:
    assert timing.first_handled is not None
    return events / max(timing.last_acked - timing.first_handled, 1e-9)


async def _check_effects(database: Database, consumer: str, expected: int) -> None:
    applied = await database.fetchone("SELECT COUNT(*) FROM bench_effects WHERE consumer = ?", (consumer,))
    if int((applied or (0,))[0]) != expected:
        raise AssertionError(f"expected {expected} effect rows of {consumer}, found {applied}")


async def _wait(event: asyncio.Event, runner: asyncio.Task[None], timeout: float) -> None:
    """Wait for ``event``; the runner (a consumer runner or the relay) failing, or the timeout,
    ends the benchmark with its error."""
    waiter = asyncio.create_task(event.wait())
    done, _ = await asyncio.wait({waiter, runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        if runner in done:
            runner.result()
            raise RuntimeError(f"{runner.get_name()} stopped")
        raise TimeoutError(f"{runner.get_name()} did not finish within {timeout}s")


# -- Strowger: the outbox relay ---------------------------------------------------------------------------


async def _strowger_relay(
    database: Database, bus: Bus, topic: str, events: int, progress: Progress, figures: StrowgerFigures
) -> None:
    outbox = await _fill_outbox(database, topic, events)
    relay = OutboxRelay(database, bus, outbox, retention=None)
    progress("Strowger: outbox relay", 0.55)
    started = time.perf_counter()
    relayed = 0
    while relayed < events:
        done = await relay.relay_once()
        if not done:
            raise AssertionError(f"the relay stopped after {relayed} of {events} rows")
        relayed += done
    figures.relay_per_s = events / (time.perf_counter() - started)
    progress("Strowger: paced commit → published", 0.65)
    await _analyze_outbox(database)
    latency = await _relay_latency(database, bus, topic)
    figures.relay_latency_p50_ms, figures.relay_latency_p99_ms, figures.relay_paced_rate_reached = latency


async def _fill_outbox(database: Database, topic: str, events: int) -> Outbox:
    """``events`` rows for ``topic`` committed in the outbox (500 a transaction), then analyzed."""
    outbox = Outbox()
    for first in range(0, events, PUBLISH_BATCH):
        async with database.transaction() as tx:
            await outbox.add(tx, _messages(topic, first, min(PUBLISH_BATCH, events - first)))
    await _analyze_outbox(database)
    return outbox


async def _analyze_outbox(database: Database) -> None:
    """Give PostgreSQL the outbox's statistics, as autovacuum has in any running deployment.

    The bench's outbox table is seconds old and was just filled (or just relayed): without
    statistics the planner takes a batch with a bitmap scan, which walks every index entry of
    rows already published (a bitmap scan never marks dead entries; a plain index scan does),
    so each batch after a burst costs tens of milliseconds more than in a deployment whose
    autovacuum analyzed the table after its first 10% of changes."""
    if database.kind == "postgresql":
        async with database.transaction() as tx:
            await tx.execute("ANALYZE outbox")


class _PublishedClock:
    """A pipeline observer noting when the relay reported each message published (by its key).

    The relay reports a batch after its transaction committed, i.e. after the bus confirmed
    and the rows were marked: the end of commit→published."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.all_published = asyncio.Event()
        self.expected = 0

    def published(self, messages: Sequence[Message]) -> None:
        now = time.time()
        for message in messages:
            self.at[message.key] = now
        if len(self.at) >= self.expected:
            self.all_published.set()

    def handled(self, *_args: Any) -> None:
        pass

    def failed(self, *_args: Any) -> None:
        pass

    def dead_lettered(self, *_args: Any) -> None:
        pass


RELAY_PACED_WRITERS = 4  # commits in flight at once, as concurrent requests would be


async def _relay_latency(database: Database, bus: Bus, topic: str) -> tuple[float, float, float]:
    """Commit→published p50/p99 of rows committed one per transaction at :data:`RELAY_PACED_RATE`/s,
    and the commit rate reached.

    Up to :data:`RELAY_PACED_WRITERS` transactions run at once: one writer committing in turn
    cannot reach 1,000/s when a commit takes more than a millisecond (a loaded machine), and
    the figure would then be at a lower rate than it says. A row's clock starts when its
    commit returned, so waiting for a writer slot is not counted.
    """
    count = int(RELAY_PACED_RATE * RELAY_PACED_SECONDS)
    outbox, clock = Outbox(), _PublishedClock()
    clock.expected = count
    relay = OutboxRelay(database, bus, outbox, retention=None, observer=clock)
    committed: dict[str, float] = {}
    writers = asyncio.Semaphore(RELAY_PACED_WRITERS)

    async def commit(n: int) -> None:
        message = encode(_order_event(n), topic)
        key = f"paced-{n}"  # a unique key per row: its publication is looked up by it
        async with writers, database.transaction() as tx:
            await outbox.add(tx, [Message(topic, key, message.headers, message.value)])
        committed[key] = time.time()

    task = asyncio.create_task(relay.run(), name="the outbox relay")
    try:
        await asyncio.sleep(0.2)  # past the relay's first (full) round: from now on it waits
        started = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        for n in range(count):
            delay = started + n / RELAY_PACED_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(commit(n)))
        await asyncio.gather(*pending)
        reached = count / max(time.perf_counter() - started, 1e-9)
        await _wait(clock.all_published, task, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    p50, p99 = _percentiles([(clock.at[key] - at) * 1000 for key, at in committed.items()])
    return p50, p99, reached


# -- the peers ---------------------------------------------------------------------------------------------


def _sqlite_read_loop(path: str, topic: str) -> tuple[int, float]:
    """Every row of ``topic`` through sqlite3 itself; (rows, seconds)."""
    import sqlite3

    seen = 0
    connection = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        for partition in range(PARTITIONS):
            offset = 0
            while rows := connection.execute(LOG_PAGE, (topic, partition, offset, CONSUMER_BATCH)).fetchall():
                seen += len(rows)
                offset = int(rows[-1][0]) + 1
        return seen, time.perf_counter() - started
    finally:
        connection.close()


async def _postgres_read_loop(database: PostgresDatabase, topic: str) -> tuple[int, float]:
    """Every row of ``topic`` through psycopg itself (one connection, autocommit); (rows, seconds)."""
    import psycopg

    query = to_psycopg(LOG_PAGE)
    seen = 0
    async with await psycopg.AsyncConnection.connect(database.url, autocommit=True) as connection:
        await connection.execute(f'SET search_path TO "{database.schema}"')
        started = time.perf_counter()
        for partition in range(PARTITIONS):
            offset = 0
            while True:
                cursor = await connection.execute(query, (topic, partition, offset, CONSUMER_BATCH))
                rows = await cursor.fetchall()
                if not rows:
                    break
                seen += len(rows)
                offset = int(rows[-1][0]) + 1
        return seen, time.perf_counter() - started


async def _embedded_peer(database: Database, topic: str, events: int) -> PeerFigures:
    """A plain read loop over the same ``bus_log`` rows with the bare driver: no decode, no inbox."""
    if isinstance(database, SqliteDatabase):
        client = "sqlite3 read loop"
        seen, seconds = _sqlite_read_loop(str(database.path), topic)
    else:
        assert isinstance(database, PostgresDatabase)
        client = "psycopg read loop"
        seen, seconds = await _postgres_read_loop(database, topic)
    if seen < events:
        raise AssertionError(f"the raw read loop found {seen} of {events} rows")
    return PeerFigures(
        client=client,
        consume_per_s=seen / max(seconds, 1e-9),
        notes="reads the same bus_log rows, partition by partition, 500 a query; no decode, "
        "no inbox, no commit; no latency figure (a polling reader's latency is its poll interval)",
    )


async def _kafka_peer(events: int, size: int, progress: Progress) -> PeerFigures:
    from strowger.bench.raw_kafka import confluent_roundtrip

    raw = await confluent_roundtrip(service_url("kafka"), events, size, _sub_progress(progress, 0.8, 0.95))
    return PeerFigures(
        client=raw.client,
        consume_per_s=raw.consume_per_second,
        produce_per_s=raw.produce_per_second,
        latency_p50_ms=raw.latency_p50_ms,
        latency_p99_ms=raw.latency_p99_ms,
        notes="its own topic (same partitions, message size and key spread); consume = catch-up read "
        "of a full topic; latency = produce→consume at 2,000/s",
        extra=asdict(raw),
    )


def rabbitmq_peer_available() -> bool:
    """Whether the aio-pika peer (another engineer's module) is installed in this tree."""
    return importlib.util.find_spec("strowger.bench.raw_rabbitmq") is not None


async def _rabbitmq_peer(events: int, size: int, progress: Progress) -> PeerFigures:
    if not rabbitmq_peer_available():
        return PeerFigures(
            client="aio-pika", missing="strowger.bench.raw_rabbitmq is not available: no peer figure"
        )
    from strowger.bench.raw_rabbitmq import rabbitmq_roundtrip

    raw = await rabbitmq_roundtrip(service_url("rabbitmq"), events, size, _sub_progress(progress, 0.8, 0.95))
    return PeerFigures(
        client=raw.client,
        consume_per_s=raw.consume_per_second,
        produce_per_s=raw.publish_per_second,
        latency_p50_ms=raw.latency_p50_ms,
        latency_p99_ms=raw.latency_p99_ms,
        notes="one durable classic queue, persistent messages, prefetch 500; consume = catch-up "
        "read of a full queue; latency = publish→consume at 2,000/s",
        extra=asdict(raw),
    )


def _sub_progress(progress: Progress, start: float, end: float) -> Progress:
    def report(description: str, fraction: float) -> None:
        progress(description, start + (end - start) * fraction)

    return report


# -- the public surface ------------------------------------------------------------------------------


async def bus_bench(backend: str, events: int, db: str, progress: Progress | None = None) -> dict[str, Any]:
    """Measure Strowger on ``backend`` (database ``db``) and its raw peer in one run; see the docstring.

    Returns one JSON-ready dict: ``strowger``, ``peer``, ``ratio``, ``targets``, ``meets``, ``machine``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if db not in DATABASES:
        raise ValueError(f"db must be one of {DATABASES}, got {db!r}")
    report = progress or (lambda _description, _fraction: None)
    figures = StrowgerFigures()
    async with _environment(backend, db) as (database, bus, topics):
        topic = await _new_topic(bus, topics, "pipeline")
        await _strowger_pipeline(database, bus, topic, events, report, figures)
        await _strowger_relay(database, bus, await _new_topic(bus, topics, "relay"), events, report, figures)
        floor = await _floors(backend, db, database, bus, topics, topic, events, report)
        report(f"peer on {backend}", 0.8)
        if backend == "embedded":
            peer = await _embedded_peer(database, topic, events)
        elif backend == "kafka":
            peer = await _kafka_peer(events, figures.message_bytes, report)
        else:
            peer = await _rabbitmq_peer(events, figures.message_bytes, report)
    report("done", 1.0)
    return _result(backend, db, events, figures, peer, floor)


async def _floors(
    backend: str,
    db: str,
    database: Database,
    bus: Bus,
    topics: list[str],
    pipeline_topic: str,
    events: int,
    progress: Progress,
) -> dict[str, Any]:
    """The hand-written floors (:mod:`strowger.bench.floors`), where written: Kafka + PostgreSQL
    (consume and relay), the embedded log on SQLite (consume)."""
    if backend == "embedded" and isinstance(database, SqliteDatabase):
        from strowger.bench.floors import sqlite_log_consume_floor

        progress("floor: hand-written consume loop", 0.72)
        consume = await asyncio.to_thread(
            sqlite_log_consume_floor, str(database.path), pipeline_topic, PARTITIONS, events
        )
        return {"consume_per_s": round(consume.per_second, 1), "consume_client": consume.what}
    if backend != "kafka" or not isinstance(database, PostgresDatabase) or database.schema is None:
        return {"missing": "hand-written floors exist for kafka + postgres and embedded + sqlite only"}
    from strowger.bench.floors import kafka_consume_floor, kafka_relay_floor
    from strowger.bus.kafka import bootstrap_servers

    servers, schema = bootstrap_servers(service_url("kafka")), database.schema
    progress("floor: hand-written consume loop", 0.72)
    consume = await asyncio.to_thread(
        kafka_consume_floor, servers, pipeline_topic, database.url, schema, events
    )
    relay_topic = await _new_topic(bus, topics, "floor")
    await _fill_outbox(database, relay_topic, events)
    progress("floor: hand-written relay", 0.76)
    relay = await asyncio.to_thread(kafka_relay_floor, servers, database.url, schema, relay_topic, events)
    return {
        "consume_per_s": round(consume.per_second, 1),
        "relay_per_s": round(relay.per_second, 1),
        "consume_client": consume.what,
        "relay_client": relay.what,
    }


def _result(
    backend: str,
    db: str,
    events: int,
    ours: StrowgerFigures,
    peer: PeerFigures,
    floor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ratio = None if not peer.consume_per_s else round(ours.consume_per_s / peer.consume_per_s, 3)
    each = ours.consume_per_event_handler_per_s
    ratio_each = None if not peer.consume_per_s else round(each / peer.consume_per_s, 3)
    targets = {
        "consume_ratio_min": TARGET_CONSUME_RATIO,
        "relay_per_s_min_on_postgres": TARGET_RELAY_PER_S,
        "relay_latency_p99_ms_max": TARGET_RELAY_P99_MS,
    }
    meets: dict[str, bool | None] = {
        "consume_ratio": None if ratio is None else ratio >= TARGET_CONSUME_RATIO,
        "relay_per_s": ours.relay_per_s >= TARGET_RELAY_PER_S if db == "postgres" else None,
        "relay_latency_p99": ours.relay_latency_p99_ms < TARGET_RELAY_P99_MS
        and ours.relay_paced_rate_reached >= RELAY_PACED_RATE * 0.95,  # the target is AT 1,000/s
    }
    strowger = {name: round(value, 2) for name, value in asdict(ours).items()}
    peer_figures = asdict(peer)
    for name in ("consume_per_s", "produce_per_s", "latency_p50_ms", "latency_p99_ms"):
        peer_figures[name] = _round(peer_figures[name])
    return {
        "benchmark": "bus",
        "backend": backend,
        "db": db,
        "events": events,
        "paced_events": PACED_EVENTS,
        "relay_paced_rate": RELAY_PACED_RATE,
        "strowger": strowger,
        "peer": peer_figures,
        "ratio": {
            "consume": ratio,
            "consume_per_event_handler": ratio_each,
            **_floor_ratios(ours, peer, floor),
        },
        "floor": floor or {"missing": "not measured"},
        "targets": targets,
        "meets": meets,
        "machine": {**machine_info(), "load_average": list(os.getloadavg())},
    }


def _floor_ratios(ours: StrowgerFigures, peer: PeerFigures, floor: dict[str, Any] | None) -> dict[str, float]:
    """Strowger against the hand-written floor, and the floor itself against the raw client."""
    if not floor or "consume_per_s" not in floor:
        return {}
    ratios = {"consume_to_floor": round(ours.consume_per_s / floor["consume_per_s"], 3)}
    if "relay_per_s" in floor:
        ratios["relay_to_floor"] = round(ours.relay_per_s / floor["relay_per_s"], 3)
    if peer.consume_per_s:
        ratios["floor_consume_to_peer"] = round(floor["consume_per_s"] / peer.consume_per_s, 3)
    return ratios


def run_bus_bench(backend: str, events: int, db: str, progress: Progress | None = None) -> dict[str, Any]:
    """:func:`bus_bench` on a fresh event loop (for the CLI)."""
    return asyncio.run(bus_bench(backend, events, db, progress))


def _cell(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:,.1f}{unit}"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]meets target[/]" if ok else "[red]misses target[/]"


def render_table(result: dict[str, Any]) -> Table:
    """Ours beside the peer's, one row per figure."""
    ours, peer, meets = result["strowger"], result["peer"], result["meets"]
    table = Table(
        title=f"Event bus: {result['backend']} on {result['db']} ({result['events']:,} events, "
        f"{ours['message_bytes']} B each)"
    )
    table.add_column("figure")
    table.add_column("Strowger", justify="right")
    table.add_column(peer["client"], justify="right")
    table.add_column("Strowger / peer", justify="right")
    table.add_column("target")
    ratio = result["ratio"]["consume"]
    table.add_row(
        "consume → handle → commit (batch handler), events/s",
        _cell(ours["consume_per_s"]),
        _cell(peer["consume_per_s"]) if not peer["missing"] else f"[yellow]{peer['missing']}[/]",
        "—" if ratio is None else f"{ratio:.1%}",
        f"≥ {TARGET_CONSUME_RATIO:.0%} of peer {_verdict(meets['consume_ratio'])}",
    )
    table.add_row(
        "  the same, per-event handler, events/s", _cell(ours["consume_per_event_handler_per_s"]), "", "", ""
    )
    table.add_row(
        f"publish → handled p50 / p99 ms @ {ours['paced_rate']:,.0f}/s",
        f"{ours['latency_p50_ms']:.1f} / {ours['latency_p99_ms']:.1f}",
        "—"
        if peer["latency_p50_ms"] is None
        else f"{peer['latency_p50_ms']:.1f} / {peer['latency_p99_ms']:.1f}",
        "",
        "",
    )
    table.add_row("publish (batches of 500), events/s", _cell(ours["fill_publish_per_s"]),
                  _cell(peer["produce_per_s"]), "", "")  # fmt: skip
    table.add_row(
        "outbox relay, events/s",
        _cell(ours["relay_per_s"]),
        "",
        "",
        f"≥ {TARGET_RELAY_PER_S:,.0f} on PostgreSQL {_verdict(meets['relay_per_s'])}",
    )
    table.add_row(
        f"commit → published p50 / p99 ms @ {ours['relay_paced_rate_reached']:,.0f}/s"
        f" (paced at {result['relay_paced_rate']:,.0f}/s)",
        f"{ours['relay_latency_p50_ms']:.1f} / {ours['relay_latency_p99_ms']:.1f}",
        "",
        "",
        f"p99 < {TARGET_RELAY_P99_MS:.0f} ms {_verdict(meets['relay_latency_p99'])}",
    )
    table.caption = _floor_caption(result)
    return table


def _floor_caption(result: dict[str, Any]) -> str:
    floor, ratio = result.get("floor") or {}, result["ratio"]
    if "consume_per_s" not in floor:
        return f"hand-written floor: {floor.get('missing', 'not measured')}"
    text = (
        f"hand-written floor, same durable work without Strowger (bench/floors.py): consume "
        f"{floor['consume_per_s']:,.0f}/s ({ratio.get('floor_consume_to_peer', 0):.1%} of the raw peer; "
        f"Strowger {ratio['consume_to_floor']:.0%} of it)"
    )
    if "relay_per_s" in floor:
        text += f", relay {floor['relay_per_s']:,.0f}/s (Strowger {ratio['relay_to_floor']:.0%} of it)"
    return text
