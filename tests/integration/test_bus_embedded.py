"""The bus contract on the embedded log (SQLite), plus what only the embedded bus promises."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.port import Bus
from strowger.events.envelope import Category
from strowger.events.topics import Topic
from strowger.store.db import Database
from strowger.store.sqlite import SqliteDatabase
from tests.conftest import unique
from tests.contract.bus_contract import BusContract, drain, message, quiet

pytestmark = pytest.mark.integration


class TestEmbeddedBus(BusContract):
    @pytest.fixture
    async def bus(self, sqlite_db: Database) -> AsyncIterator[Bus]:
        bus = EmbeddedBus("embedded://", database=sqlite_db)
        await bus.start()
        yield bus
        await bus.stop()


async def test_the_log_and_the_group_positions_survive_a_restart(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"
    topic, group = unique("t"), unique("g")
    database = SqliteDatabase(url)
    bus = EmbeddedBus(database=database)
    await bus.start()
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=3)])
    await bus.publish([message(topic, f"k{n}", n) for n in range(6)])
    member = bus.subscriber(group, [topic])
    await member.start()
    first = await drain(member, 6, commit=False)
    await member.commit([d for d in first if int(d.message.value) < 3])
    await bus.stop()
    await database.close()

    database = SqliteDatabase(url)
    bus = EmbeddedBus(database=database)
    await bus.start()
    member = bus.subscriber(group, [topic])
    await member.start()
    try:
        again = await drain(member, 3)
        assert sorted(int(d.message.value) for d in again) == [3, 4, 5]
        assert bus.partitions_of(topic) == 3
        assert not await quiet(member, 0.3)
    finally:
        await bus.stop()
        await database.close()


async def test_append_inside_a_rolled_back_transaction_leaves_no_trace(sqlite_db: Database) -> None:
    bus = EmbeddedBus(database=sqlite_db)
    await bus.start()
    topic = unique("t")
    with pytest.raises(RuntimeError):
        async with sqlite_db.transaction() as tx:
            await bus.append(tx, [message(topic, "k", 1)])
            raise RuntimeError("the caller's transaction fails")
    member = bus.subscriber(unique("g"), [topic])
    await member.start()
    try:
        assert not await quiet(member, 0.3)
        assert sum(s.end for s in await bus.lag("g", [topic])) == 0
    finally:
        await bus.stop()


class TestEmbeddedBusOnPostgres(BusContract):
    @pytest.fixture
    async def bus(self, postgres_db: Database) -> AsyncIterator[Bus]:
        bus = EmbeddedBus("embedded://", database=postgres_db)
        await bus.start()
        yield bus
        await bus.stop()
