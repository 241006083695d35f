"""The batch handler API of the consumer runtime, on the embedded bus over SQLite and PostgreSQL.

A batch handler gets the whole fresh batch in one call; when it raises, the batch is redone
one event at a time (through the same handler) so retries, parking and dead letters behave
exactly as with a per-event handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.port import Bus, Delivery
from strowger.bus.runtime import Consumer, ConsumerRunner, UnitOfWork
from strowger.errors import InvalidStateTransition, TransientError
from strowger.events.envelope import Category, Envelope, Message, encode
from strowger.events.topics import Topic
from strowger.store.db import Database
from strowger.store.deadletters import DeadLetterFilter, DeadLetterQueue
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique
from tests.contract.runtime_contract import EFFECTS, event, wait_until

pytestmark = pytest.mark.integration


class Recorder:
    """A batch handler writing one effect row per event with one executemany; it logs its calls."""

    def __init__(self, *, fail_on: str | None = None, error: type[Exception] = InvalidStateTransition):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.error = error
        self.failures = 0

    async def __call__(self, envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
        self.calls.append([e.event_id for e in envelopes])
        assert len(uow.deliveries) == len(envelopes)
        assert [d.message.event_id for d in uow.deliveries] == [e.event_id for e in envelopes]
        await uow.tx.executemany(
            "INSERT INTO effects (consumer, event_id, entity, seq) VALUES (?, ?, ?, ?)",
            [(uow.consumer, e.event_id, e.entity_key, e.resource()["seq"]) for e in envelopes],
        )
        if self.fail_on is not None and any(e.entity_key == self.fail_on for e in envelopes):
            self.failures += 1
            if self.error is not TransientError or self.failures <= 2:
                raise self.error(f"{self.fail_on} cannot be applied")


@pytest.fixture
async def bus(database: Database) -> AsyncIterator[Bus]:
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def topic(bus: Bus, database: Database) -> str:
    name = unique("batch")
    await bus.ensure_topics([Topic(name, Category.DOMAIN, partitions=2)])
    await database.create_tables(EFFECTS, OUTBOX_TABLES)
    return name


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    running: list[asyncio.Task[None]] = []
    yield running
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def _start(runner: ConsumerRunner, tasks: list[asyncio.Task[None]]) -> None:
    tasks.append(asyncio.create_task(runner.run()))
    async with asyncio.timeout(30):
        await runner.started.wait()


def _runner(bus: Bus, database: Database, topic: str, handler: Recorder, **options: object) -> ConsumerRunner:
    consumer = Consumer(
        name=unique("batch-consumer"),
        topics=(topic,),
        batch_handler=handler,
        batch_size=100,
        retry_backoff=(0.2, 0.2, 0.2),
    )
    return ConsumerRunner(consumer, bus, database, fetch_timeout=0.3, retry_poll_interval=0.2, **options)  # type: ignore[arg-type]


async def _effects(database: Database, consumer: str) -> list[tuple[str, str, int]]:
    rows = await database.fetchall(
        "SELECT event_id, entity, seq FROM effects WHERE consumer = ? ORDER BY position", (consumer,)
    )
    return [(str(e), str(k), int(s)) for e, k, s in rows]


async def _wait_effects(database: Database, consumer: str, count: int) -> list[tuple[str, str, int]]:
    async def enough() -> bool:
        return len(await _effects(database, consumer)) >= count

    await wait_until(enough, f"{count} effects")
    return await _effects(database, consumer)


def test_a_consumer_needs_a_handler_or_a_batch_handler() -> None:
    with pytest.raises(ValueError, match="neither a handler nor a batch_handler"):
        Consumer(name="nothing", topics=("t",))


class BatchHandlerContract:
    """Subclassed per database; the ``database`` fixture is the subclass's."""

    async def test_a_batch_handler_applies_a_whole_batch_in_one_call_once_each(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        handler = Recorder()
        events = [event(f"order-{k}", n) for k in range(5) for n in range(8)]
        duplicate = events[3]
        await bus.publish([encode(e, topic) for e in [*events, duplicate]])  # before the runner joins
        runner = _runner(bus, database, topic, handler)
        await _start(runner, tasks)
        effects = await _wait_effects(database, runner.name, len(events))
        await asyncio.sleep(0.3)  # a late duplicate effect would show now
        assert sorted(e for e, _, _ in await _effects(database, runner.name)) == sorted(
            e.event_id for e in events
        )
        assert len(handler.calls) < len(events)  # batches, not one call per event
        assert max(len(call) for call in handler.calls) > 1
        for k in range(5):
            assert [s for _, key, s in effects if key == f"order-{k}"] == list(range(8))
        assert runner.stats.applied == len(events) and runner.stats.duplicates == 1

    async def test_a_failing_batch_is_redone_event_by_event_and_only_the_culprit_is_dead_lettered(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        handler = Recorder(fail_on="bad")
        events = [event("a", 0), event("bad", 0), event("c", 0), event("bad", 1), event("d", 0)]
        await bus.publish([encode(e, topic) for e in events])
        runner = _runner(bus, database, topic, handler)
        await _start(runner, tasks)
        await _wait_effects(database, runner.name, 3)

        async def dead_and_blocked() -> bool:
            return runner.stats.dead == 1 and runner.stats.blocked == 1

        await wait_until(dead_and_blocked, "the dead letter and the event parked behind it")
        [letter] = await DeadLetterQueue(database).find(DeadLetterFilter(consumer=runner.name))
        assert letter.entity_key == "bad" and letter.error_type == "InvalidStateTransition"
        effects = await _effects(database, runner.name)
        assert sorted(k for _, k, _ in effects) == ["a", "c", "d"]  # the batch's rollback undid nothing kept
        assert any(len(call) > 1 for call in handler.calls)  # the fast path ran first
        assert [len(call) for call in handler.calls[-3:]] == [1, 1, 1]  # then one event at a time

    async def test_a_transient_failure_in_a_batch_is_retried_like_a_per_event_one(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        handler = Recorder(fail_on="flaky", error=TransientError)
        events = [event("x", 0), event("flaky", 0), event("flaky", 1), event("y", 0)]
        await bus.publish([encode(e, topic) for e in events])
        runner = _runner(bus, database, topic, handler)
        await _start(runner, tasks)
        effects = await _wait_effects(database, runner.name, len(events))
        assert [s for _, k, s in effects if k == "flaky"] == [0, 1]  # in order, after the retry
        assert runner.stats.parked == 1 and runner.stats.dead == 0

    async def test_a_batch_handler_emits_through_the_outbox_with_one_insert(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        downstream = unique("batch-downstream")
        await bus.ensure_topics([Topic(downstream, Category.DOMAIN, partitions=2)])
        outbox = Outbox()

        async def react(envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
            reactions = [e.caused("ThingReactedEvent", {"thing": dict(e.resource())}) for e in envelopes]
            await uow.emit_many(reactions, downstream)

        consumer = Consumer(name=unique("reactor"), topics=(topic,), batch_handler=react, batch_size=50)
        upstream = ConsumerRunner(consumer, bus, database, outbox=outbox, fetch_timeout=0.3)
        recorder = _runner(bus, database, downstream, Recorder())
        tasks.append(asyncio.create_task(OutboxRelay(database, bus, outbox, poll_interval=0.2).run()))
        await _start(upstream, tasks)
        await _start(recorder, tasks)
        sources = [event(f"o-{n}", n) for n in range(6)]
        await bus.publish([encode(e, topic) for e in sources])
        effects = await _wait_effects(database, recorder.name, len(sources))
        assert sorted(s for _, _, s in effects) == list(range(6))
        rows = await database.fetchall("SELECT headers FROM outbox WHERE topic = ?", (downstream,))
        assert len(rows) == len(sources) and all(consumer.name in str(h) for (h,) in rows)  # producer set

    async def test_a_prepare_step_runs_outside_the_transaction_and_hands_its_result_to_the_handler(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        handler = Recorder(fail_on="bad")
        prepared: list[list[str]] = []
        given: list[object] = []

        async def prepare(events: Sequence[tuple[Delivery, Envelope]]) -> object:
            prepared.append([envelope.event_id for _, envelope in events])
            # A write of its own: it would wait forever if the batch's transaction were open.
            async with asyncio.timeout(5), database.transaction() as tx:
                await tx.execute(
                    "INSERT INTO effects (consumer, event_id, entity, seq) VALUES (?, ?, ?, ?)",
                    ("prepare", f"prepare-{len(prepared)}", "prepare", 0),
                )
            return {"token": len(prepared)}

        async def handle(envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
            given.append(uow.prepared)
            await handler(envelopes, uow)

        consumer = Consumer(
            name=unique("prepared"), topics=(topic,), batch_handler=handle, prepare=prepare, batch_size=100
        )
        runner = ConsumerRunner(consumer, bus, database, fetch_timeout=0.3, retry_poll_interval=0.2)
        poison = Message(topic=topic, key="p", headers={"eventType": "ThingChangeEvent"}, value=b"\x00{no")
        events = [event("a", 0), event("bad", 0), event("c", 0)]
        await bus.publish([poison, *(encode(e, topic) for e in events)])
        await _start(runner, tasks)
        effects = await _wait_effects(database, runner.name, 2)
        assert sorted(k for _, k, _ in effects) == ["a", "c"]
        assert prepared and sorted(prepared[0]) == sorted(e.event_id for e in events)  # not the poison
        assert given and all(isinstance(value, dict) and "token" in value for value in given)
        assert [len(call) for call in handler.calls[-3:]] == [1, 1, 1]  # the careful path got it too

        async def both_dead() -> bool:
            return len(await DeadLetterQueue(database).find(DeadLetterFilter(consumer=runner.name))) == 2

        await wait_until(both_dead, "the poison and the failing event dead-lettered")

    async def test_a_failing_prepare_step_leaves_the_batch_to_the_handler(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        handler = Recorder()
        given: list[object] = []

        async def prepare(events: Sequence[tuple[Delivery, Envelope]]) -> object:
            raise RuntimeError("the shortcut is down")

        async def handle(envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
            given.append(uow.prepared)
            await handler(envelopes, uow)

        consumer = Consumer(name=unique("unprepared"), topics=(topic,), batch_handler=handle, prepare=prepare)
        runner = ConsumerRunner(consumer, bus, database, fetch_timeout=0.3)
        events = [event("a", n) for n in range(3)]
        await bus.publish([encode(e, topic) for e in events])
        await _start(runner, tasks)
        effects = await _wait_effects(database, runner.name, 3)
        assert [s for _, _, s in effects] == [0, 1, 2]
        assert given and all(value is None for value in given)


class TestBatchHandlerOnSqlite(BatchHandlerContract):
    @pytest.fixture
    async def database(self, sqlite_db: Database) -> AsyncIterator[Database]:
        yield sqlite_db


class TestBatchHandlerOnPostgres(BatchHandlerContract):
    @pytest.fixture
    async def database(self, postgres_db: Database) -> AsyncIterator[Database]:
        yield postgres_db
