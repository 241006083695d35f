"""Cancelling consumer runners on PostgreSQL: they stop promptly, and nothing is lost.

The flaky teardown behind this file: psycopg_pool waits for a free connection with
``asyncio.wait_for``, which on Python 3.11 drops a cancel that arrives in the same loop turn
as the connection it was waiting for. At shutdown every task is cancelled while others hand
their connections back, so a runner's loop carried on and ``run()`` waited for it forever.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import Consumer, ConsumerRunner, UnitOfWork
from strowger.events.envelope import Category, Envelope, encode
from strowger.events.topics import Topic
from strowger.store.db import Database
from strowger.store.postgres import PostgresDatabase
from tests.conftest import unique
from tests.contract.runtime_contract import EFFECTS, event, record_effect, wait_until

pytestmark = pytest.mark.integration

STOP_BUDGET = 15.0  # the executors' teardown budget; a healthy stop takes well under a second


@pytest.fixture
async def small_pool(postgres_url: str) -> AsyncIterator[Database]:
    """A schema of its own behind a pool of 2 connections per kind: tasks queue for connections."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    database = PostgresDatabase(postgres_url, schema=schema, max_size=2)
    await database.open()
    yield database
    async with database.transaction() as tx:
        await tx.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await database.close()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
    """Cancel every task ONCE (as a supervisor does) and return those still running after the budget."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=STOP_BUDGET)
    for task in stuck:  # leave nothing behind for the next test
        task.cancel()
    return stuck


async def _effects(database: Database, consumer: str) -> list[str]:
    rows = await database.fetchall(
        "SELECT event_id FROM effects WHERE consumer = ? ORDER BY position", (consumer,)
    )
    return [str(event_id) for (event_id,) in rows]


async def test_tasks_queued_for_a_pooled_connection_stop_when_cancelled_together(
    small_pool: Database,
) -> None:
    async def poll() -> None:
        while True:
            await small_pool.fetchone("SELECT 1")

    for _ in range(5):  # before the fix nearly every round left a task running
        tasks = [asyncio.create_task(poll()) for _ in range(6)]
        await asyncio.sleep(0.05)
        assert not await _cancel_all(tasks), "a cancel was lost while a task waited for a connection"


async def test_runners_sharing_a_small_pool_stop_when_cancelled_together(small_pool: Database) -> None:
    bus = EmbeddedBus("embedded://", database=small_pool)
    await bus.start()
    topic = unique("cancel")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=2)])
    await small_pool.create_tables(EFFECTS)
    try:
        for _ in range(3):
            runners = [
                ConsumerRunner(
                    Consumer(name=unique("stopper"), topics=(topic,), handler=record_effect),
                    bus,
                    small_pool,
                    fetch_timeout=0.01,  # poll hard: the read pool is always contended
                    retry_poll_interval=0.01,
                )
                for _ in range(4)
            ]
            tasks = [asyncio.create_task(runner.run()) for runner in runners]
            async with asyncio.timeout(30):
                for runner in runners:
                    await runner.started.wait()
            await bus.publish([encode(event(f"order-{k}", 0), topic) for k in range(20)])
            await asyncio.sleep(0.1)
            assert not await _cancel_all(tasks)
    finally:
        await bus.stop()


async def test_a_runner_cancelled_mid_batch_stops_and_its_batch_is_redelivered(postgres_db: Database) -> None:
    bus = EmbeddedBus("embedded://", database=postgres_db)
    await bus.start()
    topic = unique("midbatch")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    await postgres_db.create_tables(EFFECTS)
    events = [event(f"order-{k}", 0) for k in range(10)]
    await bus.publish([encode(e, topic) for e in events])
    group = unique("midbatch-consumer")
    in_flight = asyncio.Event()

    async def stall_on_the_server(envelope: Envelope, uow: UnitOfWork) -> None:
        await record_effect(envelope, uow)
        in_flight.set()
        await uow.tx.execute("SELECT pg_sleep(60)")  # a statement running in the batch's transaction

    first = ConsumerRunner(
        Consumer(name=group, topics=(topic,), handler=stall_on_the_server, batch_size=100), bus, postgres_db
    )
    task = asyncio.create_task(first.run())
    try:
        async with asyncio.timeout(30):
            await in_flight.wait()
        assert not await _cancel_all([task]), "the runner did not stop while its batch's statement ran"
        assert task.cancelled()
        assert await _effects(postgres_db, group) == []  # rolled back: nothing half-applied

        second = ConsumerRunner(
            Consumer(name=group, topics=(topic,), handler=record_effect, batch_size=100),
            bus,
            postgres_db,
            fetch_timeout=0.2,
        )
        again = asyncio.create_task(second.run())

        async def all_applied() -> bool:
            return len(await _effects(postgres_db, group)) >= len(events)

        await wait_until(all_applied, "the cancelled batch to be redelivered and applied")
        await asyncio.sleep(0.3)  # a duplicate effect would show now
        assert sorted(await _effects(postgres_db, group)) == sorted(e.event_id for e in events)
        assert not await _cancel_all([again])
    finally:
        await bus.stop()
