"""The consumer runtime's contract: one base class, subclassed per (bus, database) pair.

A subclass provides the ``bus`` (started) and ``database`` (open) fixtures; every
test then runs the real runtime, outbox relay and dead-letter queue against them.
Effects are counted in a table written by the handler (not deliveries), so
"exactly once" below means: the handler's committed effect happened once.
Timing assertions are lower bounds only (the machine may be slow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

import pytest

from strowger.bus.port import Bus, Delivery, Subscriber
from strowger.bus.runtime import Consumer, ConsumerRunner, Handler, UnitOfWork
from strowger.errors import InvalidStateTransition, TransientError
from strowger.events.envelope import Category, Envelope, Message, encode
from strowger.events.topics import Topic
from strowger.store.db import Database, TableSet
from strowger.store.deadletters import DeadLetterFilter, DeadLetterQueue, Status
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique

EFFECTS = TableSet(
    name="test-effects",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS effects (consumer TEXT, event_id TEXT, entity TEXT, seq INTEGER, "
        "position INTEGER PRIMARY KEY AUTOINCREMENT)"
    ],
    postgresql=[
        "CREATE TABLE IF NOT EXISTS effects (consumer TEXT, event_id TEXT, entity TEXT, seq INTEGER, "
        "position BIGSERIAL PRIMARY KEY)"
    ],
)
TIMEOUT = 30.0


def event(entity: str, seq: int, event_type: str = "ThingChangeEvent") -> Envelope:
    return Envelope(event_type=event_type, payload={"thing": {"id": entity, "seq": seq}}, entity_key=entity)


async def record_effect(envelope: Envelope, uow: UnitOfWork) -> None:
    thing = envelope.resource()
    await uow.tx.execute(
        "INSERT INTO effects (consumer, event_id, entity, seq) VALUES (?, ?, ?, ?)",
        (uow.consumer, envelope.event_id, thing["id"], thing["seq"]),
    )


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class RuntimeContract:
    """Every (bus, database) pair passes these. Subclasses override ``bus`` and ``database``."""

    @pytest.fixture
    async def bus(self) -> AsyncIterator[Bus]:
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    async def database(self) -> AsyncIterator[Database]:
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    async def topic(self, bus: Bus, database: Database) -> str:
        name = unique("runtime")
        await bus.ensure_topics([Topic(name, Category.DOMAIN, partitions=4)])
        await database.create_tables(EFFECTS, OUTBOX_TABLES)
        return name

    @pytest.fixture
    async def tasks(self) -> AsyncIterator[list[asyncio.Task[None]]]:
        running: list[asyncio.Task[None]] = []
        yield running
        await self._cancel(*running)

    async def _cancel(self, *tasks: asyncio.Task[None]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self,
        tasks: list[asyncio.Task[None]],
        runner: ConsumerRunner,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(runner.run())
        tasks.append(task)
        started = asyncio.create_task(runner.started.wait())
        await asyncio.wait({task, started}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the runner failed to start: show why
        started.cancel()
        assert runner.started.is_set(), "the runner did not join its group in time"
        return task

    def _runner(
        self,
        bus: Bus,
        database: Database,
        topic: str,
        handler: Handler = record_effect,
        *,
        name: str | None = None,
        backoff: tuple[float, ...] = (0.2, 0.4),
        event_types: frozenset[str] = frozenset(),
        runner_class: type[ConsumerRunner] = ConsumerRunner,
        outbox: Outbox | None = None,
    ) -> ConsumerRunner:
        consumer = Consumer(
            name=name or unique("consumer"),
            topics=(topic,),
            handler=handler,
            retry_backoff=backoff,
            event_types=event_types,
            batch_size=50,
        )
        return runner_class(
            consumer, bus, database, outbox=outbox, fetch_timeout=0.5, retry_poll_interval=0.2
        )

    async def _effects(self, database: Database, consumer: str) -> list[tuple[str, str, int]]:
        rows = await database.fetchall(
            "SELECT event_id, entity, seq FROM effects WHERE consumer = ? ORDER BY position", (consumer,)
        )
        return [(str(e), str(k), int(s)) for e, k, s in rows]

    async def _wait_effects(
        self, database: Database, consumer: str, count: int
    ) -> list[tuple[str, str, int]]:
        async def enough() -> bool:
            return len(await self._effects(database, consumer)) >= count

        await wait_until(enough, f"{count} effects of {consumer}")
        return await self._effects(database, consumer)

    async def _publish(self, bus: Bus, topic: str, envelopes: Sequence[Envelope]) -> None:
        await bus.publish([encode(envelope, topic) for envelope in envelopes])

    # ------------------------------------------------------------------------------------------

    async def test_published_events_reach_the_handler_once_each(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        runner = self._runner(bus, database, topic)
        await self._run(tasks, runner)
        events = [event(f"order-{k}", n) for k in range(3) for n in range(4)]
        await self._publish(bus, topic, events)
        effects = await self._wait_effects(database, runner.name, len(events))
        await asyncio.sleep(0.5)
        assert sorted(e for e, _, _ in await self._effects(database, runner.name)) == sorted(
            e.event_id for e in events
        )
        for k in range(3):
            assert [s for _, key, s in effects if key == f"order-{k}"] == [0, 1, 2, 3]

    async def test_the_event_type_filter_acknowledges_other_types_without_handling_them(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        runner = self._runner(bus, database, topic, event_types=frozenset({"Wanted"}))
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("o-1", 0, "Unwanted"), event("o-1", 1, "Wanted")])
        effects = await self._wait_effects(database, runner.name, 1)
        assert [s for _, _, s in effects] == [1]

        async def filtered() -> bool:  # a reader may see the commit before the runner resumes
            return runner.stats.filtered >= 1

        await wait_until(filtered, "the unwanted event counted as filtered")
        assert not await DeadLetterQueue(database).find(DeadLetterFilter(consumer=runner.name))

    async def test_events_emitted_by_a_handler_are_relayed_through_the_outbox(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        downstream = unique("downstream")
        await bus.ensure_topics([Topic(downstream, Category.DOMAIN, partitions=2)])
        outbox = Outbox()

        async def react(envelope: Envelope, uow: UnitOfWork) -> None:
            thing = envelope.resource()
            await uow.emit(envelope.caused("ThingReactedEvent", {"thing": dict(thing)}), downstream)

        relay = OutboxRelay(database, bus, outbox, poll_interval=0.2)
        tasks.append(asyncio.create_task(relay.run()))
        upstream = self._runner(bus, database, topic, react, outbox=outbox)
        recorder = self._runner(bus, database, downstream)
        await self._run(tasks, upstream)
        await self._run(tasks, recorder)
        source = event("o-9", 7)
        await self._publish(bus, topic, [source])
        effects = await self._wait_effects(database, recorder.name, 1)
        assert effects[0][1:] == ("o-9", 7)
        row = await database.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND topic = ?", (downstream,)
        )
        assert row is not None and row[0] == 0

    async def test_a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        name = unique("consumer")
        stuck = asyncio.Event()

        async def hangs_on_the_sixth(envelope: Envelope, uow: UnitOfWork) -> None:
            await record_effect(envelope, uow)
            if envelope.resource()["seq"] == 5:
                stuck.set()
                await asyncio.Event().wait()  # the process "dies" here, mid-batch

        first = self._runner(bus, database, topic, hangs_on_the_sixth, name=name)
        task = await self._run(tasks, first)
        events = [event("order-1", n) for n in range(10)]
        await self._publish(bus, topic, events)
        await asyncio.wait_for(stuck.wait(), TIMEOUT)
        await self._cancel(task)

        second = self._runner(bus, database, topic, name=name)
        await self._run(tasks, second)
        effects = await self._wait_effects(database, name, 10)
        await asyncio.sleep(1.0)
        effects = await self._effects(database, name)
        assert [s for _, _, s in effects] == list(range(10))  # each once, in order

    async def test_a_redelivery_after_a_lost_acknowledgement_is_absorbed_by_the_inbox(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        class LosesItsFirstAck(ConsumerRunner):
            lost = False

            async def _acknowledge(self, subscriber: Subscriber, batch: Sequence[Delivery]) -> None:
                if not LosesItsFirstAck.lost:
                    LosesItsFirstAck.lost = True
                    raise ConnectionError("crashed after commit, before the ack")
                await super()._acknowledge(subscriber, batch)

        name = unique("consumer")
        first = self._runner(bus, database, topic, name=name, runner_class=LosesItsFirstAck)
        task = await self._run(tasks, first)
        await self._publish(bus, topic, [event("order-1", n) for n in range(5)])
        with pytest.raises(BaseException, match="crashed after commit"):
            await asyncio.wait_for(task, TIMEOUT)
        tasks.remove(task)
        # The first batch (however many of the 5 it held) committed before its ack was lost.
        assert await self._effects(database, name)

        second = self._runner(bus, database, topic, name=name)
        await self._run(tasks, second)
        await self._wait_effects(database, name, 5)
        await wait_until(self._has_duplicates(second), "the redelivery")
        await asyncio.sleep(0.5)
        assert [s for _, _, s in await self._effects(database, name)] == list(range(5))

    def _has_duplicates(self, runner: ConsumerRunner) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return runner.stats.duplicates > 0

        return check

    async def test_a_crash_between_outbox_commit_and_publish_applies_the_event_once(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        outbox = Outbox()
        events = [event("order-3", n) for n in range(3)]
        async with database.transaction() as tx:  # the producer's state change + outbox rows
            await outbox.add(tx, [encode(e, topic) for e in events])
        # The relay published them, then died before marking the rows published:
        await self._publish(bus, topic, events)
        runner = self._runner(bus, database, topic)
        await self._run(tasks, runner)
        await self._wait_effects(database, runner.name, 3)

        relay = OutboxRelay(database, bus, outbox, poll_interval=0.2)  # the restarted relay
        tasks.append(asyncio.create_task(relay.run()))

        async def relayed() -> bool:
            row = await database.fetchone("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            return row is not None and row[0] == 0

        await wait_until(relayed, "the relay to publish the outbox")
        await wait_until(self._has_duplicates(runner), "the re-published events")
        await asyncio.sleep(0.5)
        assert [s for _, _, s in await self._effects(database, runner.name)] == [0, 1, 2]

    async def test_a_transient_failure_is_retried_after_the_backoff(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        attempts: list[float] = []

        async def fails_twice(envelope: Envelope, uow: UnitOfWork) -> None:
            attempts.append(asyncio.get_running_loop().time())
            if len(attempts) <= 2:
                raise TransientError("downstream busy")
            await record_effect(envelope, uow)

        runner = self._runner(bus, database, topic, fails_twice, backoff=(0.3, 0.6))
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("order-4", 0)])
        await self._wait_effects(database, runner.name, 1)
        assert len(attempts) == 3
        assert attempts[1] - attempts[0] >= 0.25
        assert attempts[2] - attempts[1] >= 0.5
        assert not await database.fetchall("SELECT id FROM parked WHERE consumer = ?", (runner.name,))

    async def test_a_failing_message_does_not_undo_the_rest_of_its_batch(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        async def fails_on_b(envelope: Envelope, uow: UnitOfWork) -> None:
            await record_effect(envelope, uow)  # undone by the savepoint when we raise
            if envelope.entity_key == "b":
                raise InvalidStateTransition("b cannot go there")

        runner = self._runner(bus, database, topic, fails_on_b)
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("a", 0), event("b", 0), event("c", 0)])
        await self._wait_effects(database, runner.name, 2)
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, runner.name, 1), "the dead letter")
        assert sorted(k for _, k, _ in await self._effects(database, runner.name)) == ["a", "c"]

    def _dead_count(self, dlq: DeadLetterQueue, consumer: str, count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(await dlq.find(DeadLetterFilter(consumer=consumer))) >= count

        return check

    async def test_a_dead_letter_keeps_the_whole_failure_context(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        async def always_fails(envelope: Envelope, uow: UnitOfWork) -> None:
            raise ValueError(f"cannot handle {envelope.event_id}")

        runner = self._runner(bus, database, topic, always_fails, backoff=(0.1, 0.1))
        await self._run(tasks, runner)
        source = event("order-5", 0)
        await self._publish(bus, topic, [source])
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, runner.name, 1), "the dead letter")
        [letter] = await dlq.find(DeadLetterFilter(consumer=runner.name))
        assert letter.status is Status.DEAD
        assert letter.consumer == runner.name
        assert letter.event_id == source.event_id
        assert letter.event_type == "ThingChangeEvent"
        assert letter.entity_key == "order-5"
        assert letter.error_type == "ValueError"
        assert letter.error_message == f"cannot handle {source.event_id}"
        assert letter.traceback is not None and "always_fails" in letter.traceback
        assert letter.attempts == 3 and letter.retries == 2
        assert letter.first_failed_at is not None and letter.last_failed_at is not None
        assert (letter.last_failed_at - letter.first_failed_at).total_seconds() >= 0.15
        original = encode(source, topic)
        assert letter.message.value == original.value
        assert letter.message.headers["eventId"] == source.event_id
        assert letter.message.topic == topic and letter.message.key == "order-5"
        assert (await dlq.find(DeadLetterFilter(error_type="ValueError", entity_key="order-5")))[
            0
        ].id == letter.id
        assert not await dlq.find(DeadLetterFilter(consumer=runner.name, older_than=timedelta(hours=1)))

    async def test_a_permanent_error_is_dead_lettered_without_retrying(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        calls = 0

        async def rejects(envelope: Envelope, uow: UnitOfWork) -> None:
            nonlocal calls
            calls += 1
            raise InvalidStateTransition("completed orders cannot be amended")

        runner = self._runner(bus, database, topic, rejects, backoff=(0.1, 0.1, 0.1))
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("order-6", 0)])
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, runner.name, 1), "the dead letter")
        await asyncio.sleep(0.5)
        [letter] = await dlq.find(DeadLetterFilter(consumer=runner.name))
        assert (calls, letter.attempts, letter.error_type) == (1, 1, "InvalidStateTransition")

    async def test_later_events_of_a_parked_entity_wait_behind_it_while_others_flow(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        broken = {"fixed": False}

        async def fails_until_fixed(envelope: Envelope, uow: UnitOfWork) -> None:
            if envelope.entity_key == "order-x" and envelope.resource()["seq"] == 0 and not broken["fixed"]:
                raise InvalidStateTransition("needs an operator")
            await record_effect(envelope, uow)

        runner = self._runner(bus, database, topic, fails_until_fixed)
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("order-x", n) for n in range(3)])
        await self._publish(bus, topic, [event("order-y", n) for n in range(3)])
        await self._wait_effects(database, runner.name, 3)
        await asyncio.sleep(0.5)
        effects = await self._effects(database, runner.name)
        assert [(k, s) for _, k, s in effects] == [("order-y", 0), ("order-y", 1), ("order-y", 2)]
        statuses = await database.fetchall(
            "SELECT status FROM parked WHERE consumer = ? ORDER BY id", (runner.name,)
        )
        assert [s for (s,) in statuses] == ["dead", "blocked", "blocked"]

        dlq = DeadLetterQueue(database)
        [letter] = await dlq.find(DeadLetterFilter(consumer=runner.name))
        assert await dlq.waiting_behind(letter) == 2
        dry = await dlq.replay(DeadLetterFilter(consumer=runner.name), dry_run=True)
        assert [d.id for d in dry.replayed] == [letter.id]
        await asyncio.sleep(0.5)
        assert len(await self._effects(database, runner.name)) == 3  # a dry run changes nothing

        broken["fixed"] = True
        report = await dlq.replay(DeadLetterFilter(consumer=runner.name))
        assert [d.id for d in report.replayed] == [letter.id]
        effects = await self._wait_effects(database, runner.name, 6)
        assert [s for _, k, s in effects if k == "order-x"] == [0, 1, 2]
        await wait_until(self._parked_empty(database, runner.name), "the parked rows to drain")
        assert not (await dlq.replay(DeadLetterFilter(consumer=runner.name))).replayed

    def _parked_empty(self, database: Database, consumer: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return not await database.fetchall("SELECT id FROM parked WHERE consumer = ?", (consumer,))

        return check

    async def test_replaying_an_event_already_applied_is_a_no_op(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        async def always_fails(envelope: Envelope, uow: UnitOfWork) -> None:
            raise InvalidStateTransition("no")

        name = unique("consumer")
        failing = self._runner(bus, database, topic, always_fails, name=name)
        task = await self._run(tasks, failing)
        source = event("order-7", 0)
        await self._publish(bus, topic, [source])
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, name, 1), "the dead letter")
        await self._cancel(task)
        async with database.transaction() as tx:  # meanwhile an operator applied it by other means
            await tx.execute(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, 0)",
                (name, source.event_id),
            )

        fixed = self._runner(bus, database, topic, name=name)
        await self._run(tasks, fixed)
        await dlq.replay(DeadLetterFilter(consumer=name))
        await wait_until(self._parked_empty(database, name), "the replay")
        assert await self._effects(database, name) == []

    async def test_discarding_a_dead_letter_releases_the_events_behind_it(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        async def rejects_first(envelope: Envelope, uow: UnitOfWork) -> None:
            if envelope.resource()["seq"] == 0:
                raise InvalidStateTransition("bad first event")
            await record_effect(envelope, uow)

        runner = self._runner(bus, database, topic, rejects_first)
        await self._run(tasks, runner)
        await self._publish(bus, topic, [event("order-8", n) for n in range(3)])
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, runner.name, 1), "the dead letter")
        [letter] = await dlq.find(DeadLetterFilter(consumer=runner.name))
        discarded = await dlq.discard(letter.id)
        assert discarded is not None and discarded.id == letter.id
        assert await dlq.discard(letter.id) is None
        effects = await self._wait_effects(database, runner.name, 2)
        assert [s for _, _, s in effects] == [1, 2]

    async def test_a_poison_message_is_dead_lettered_and_the_consumer_keeps_going(
        self, bus: Bus, database: Database, topic: str, tasks: list[asyncio.Task[None]]
    ) -> None:
        runner = self._runner(bus, database, topic)
        await self._run(tasks, runner)
        poison = Message(
            topic=topic, key="order-9", headers={"eventType": "ThingChangeEvent"}, value=b"\x00{not json"
        )
        await bus.publish([poison])
        await self._publish(bus, topic, [event("order-9", 1), event("order-10", 0)])
        effects = await self._wait_effects(database, runner.name, 2)
        assert sorted((k, s) for _, k, s in effects) == [("order-10", 0), ("order-9", 1)]
        dlq = DeadLetterQueue(database)
        await wait_until(self._dead_count(dlq, runner.name, 1), "the dead letter")
        [letter] = await dlq.find(DeadLetterFilter(consumer=runner.name))
        assert letter.error_type == "MalformedMessage"
        assert letter.entity_key is None  # it blocks nothing
        assert letter.message.value == poison.value
        assert letter.event_id.startswith("no-event-id:")
