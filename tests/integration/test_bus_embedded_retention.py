"""Retention of the embedded bus's log: old rows go, unread ones stay, offsets never restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.events.envelope import Category
from strowger.events.topics import Topic
from strowger.store.db import Database
from strowger.store.outbox import Outbox, OutboxRelay
from tests.conftest import unique
from tests.contract.bus_contract import drain, message, quiet
from tests.contract.runtime_contract import wait_until

pytestmark = pytest.mark.integration

DAY = 86_400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    fixture = "sqlite_db" if request.param == "sqlite" else "postgres_db"
    db: Database = request.getfixturevalue(fixture)
    return db


@pytest.fixture
async def bus(database: Database) -> AsyncIterator[EmbeddedBus]:
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    yield bus
    await bus.stop()


async def _age(database: Database, topic: str, offsets: range, days: float) -> None:
    """Make the log rows at ``offsets`` (every partition) look appended ``days`` ago."""
    async with database.transaction() as tx:
        await tx.execute(
            "UPDATE bus_log SET appended_at = appended_at - ? "
            'WHERE topic = ? AND "offset" >= ? AND "offset" < ?',
            (days * DAY, topic, offsets.start, offsets.stop),
        )


async def _offsets(database: Database, topic: str) -> list[int]:
    rows = await database.fetchall('SELECT "offset" FROM bus_log WHERE topic = ? ORDER BY "offset"', (topic,))
    return [int(offset) for (offset,) in rows]


async def test_old_rows_every_group_has_read_are_purged_and_unread_ones_kept(
    bus: EmbeddedBus, database: Database
) -> None:
    topic, reader, laggard = unique("t"), unique("reader"), unique("laggard")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    await bus.publish([message(topic, "k", n) for n in range(10)])
    await _age(database, topic, range(0, 8), days=3)  # 0..7 are old; 8, 9 are recent
    fast = bus.subscriber(reader, [topic])
    slow = bus.subscriber(laggard, [topic])
    await fast.start()
    await slow.start()
    await drain(fast, 10)  # committed: next offset 10
    await slow.commit((await drain(slow, 10, commit=False))[:5])  # committed: next offset 5

    assert await bus.purge(older_than=timedelta(days=1)) == 5  # 0..4: old and read by both
    assert await _offsets(database, topic) == [5, 6, 7, 8, 9]  # 5..7 old but the laggard needs them

    await fast.stop()
    await slow.stop()
    slow = bus.subscriber(laggard, [topic])  # rejoins at its committed position: nothing lost
    await slow.start()
    assert [int(d.message.value) for d in await drain(slow, 5)] == [5, 6, 7, 8, 9]
    assert await bus.purge(older_than=timedelta(days=1)) == 3
    assert await _offsets(database, topic) == [8, 9]

    await bus.publish([message(topic, "k", 10)])  # offsets continue after a purge
    assert await _offsets(database, topic) == [8, 9, 10]
    fresh = bus.subscriber(unique("newcomer"), [topic])  # a new group starts at the oldest kept
    await fresh.start()
    assert [d.offset for d in await drain(fresh, 3)] == [8, 9, 10]
    assert not await quiet(fresh, 0.2)


async def test_a_partition_no_group_has_committed_on_is_purged_by_age_alone(
    bus: EmbeddedBus, database: Database
) -> None:
    topic = unique("t")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    await bus.publish([message(topic, "k", n) for n in range(4)])
    await _age(database, topic, range(0, 3), days=8)
    assert await bus.purge(older_than=timedelta(days=7)) == 3
    assert await _offsets(database, topic) == [3]


async def test_the_outbox_relay_purges_the_log_with_its_retention(
    bus: EmbeddedBus, database: Database
) -> None:
    topic = unique("t")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    await bus.publish([message(topic, "k", n) for n in range(4)])
    await _age(database, topic, range(0, 2), days=2)
    relay = OutboxRelay(database, bus, Outbox(), retention=timedelta(days=1), poll_interval=0.05)
    task = asyncio.create_task(relay.run())
    try:

        async def purged() -> bool:
            return await _offsets(database, topic) == [2, 3]

        await wait_until(purged, "the relay's purge of the log")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
