"""The PostgreSQL relay's batches: a group of partitions per transaction, claimed partition by
partition, taken and marked by one statement, published in (partition, id) order."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.partitioning import partition_for
from strowger.errors import ServiceUnavailable
from strowger.events.envelope import Message, encode
from strowger.store.db import Database
from strowger.store.outbox import ADVISORY_LOCK_CLASS, OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique
from tests.contract.bus_contract import drain
from tests.contract.runtime_contract import event

pytestmark = pytest.mark.integration


@pytest.fixture
async def outbox_db(postgres_db: Database) -> Database:
    await postgres_db.create_tables(OUTBOX_TABLES)
    return postgres_db


def _entities_in_distinct_partitions(count: int, partitions: int) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(partition_for(f"order-{n}", partitions), f"order-{n}")
        n += 1
    return list(found.values())


async def _read_all(bus: EmbeddedBus, topic: str, count: int) -> list[Message]:
    member = bus.subscriber(unique("reader"), [topic])
    await member.start()
    try:
        return [d.message for d in await drain(member, count)]
    finally:
        await member.stop()


async def _unpublished_keys(database: Database) -> list[str]:
    rows = await database.fetchall("SELECT key FROM outbox WHERE published_at IS NULL ORDER BY id")
    return [str(key) for (key,) in rows]


async def test_one_group_relays_its_free_partitions_and_skips_the_one_another_relay_holds(
    outbox_db: Database, external_bus: EmbeddedBus
) -> None:
    outbox, topic = Outbox(), unique("t")
    held, free = _entities_in_distinct_partitions(2, outbox.partitions)
    async with outbox_db.transaction() as tx:
        await outbox.add(tx, [encode(event(entity, n), topic) for n in range(3) for entity in (held, free)])
    relay = OutboxRelay(outbox_db, external_bus, outbox, concurrency=1)  # one group: both partitions
    async with outbox_db.transaction() as other_relay:
        await other_relay.fetchone(
            "SELECT pg_advisory_xact_lock(hashtext(? || current_schema()), ?)",
            (f"{ADVISORY_LOCK_CLASS}:", partition_for(held, outbox.partitions)),
        )
        assert await relay.relay_once() == 3
        assert await _unpublished_keys(outbox_db) == [held] * 3
    assert await relay.relay_once() == 3
    assert await _unpublished_keys(outbox_db) == []


async def test_a_batch_spanning_partitions_keeps_each_entity_in_order_and_stops_at_the_batch_size(
    outbox_db: Database, external_bus: EmbeddedBus
) -> None:
    outbox, topic = Outbox(), unique("t")
    entities = _entities_in_distinct_partitions(3, outbox.partitions)
    for n in range(4):  # interleaved commits: ids alternate between the entities
        async with outbox_db.transaction() as tx:
            await outbox.add(tx, [encode(event(entity, n), topic) for entity in entities])
    relay = OutboxRelay(outbox_db, external_bus, outbox, concurrency=1, batch_size=5)

    assert await relay.relay_once() == 5  # one group, one batch of at most 5 rows
    assert len(await _unpublished_keys(outbox_db)) == 7
    while await relay.relay_once():
        pass

    messages = await _read_all(external_bus, topic, 12)
    for entity in entities:
        seqs = [orjson.loads(m.value)["event"]["thing"]["seq"] for m in messages if m.key == entity]
        assert seqs == [0, 1, 2, 3], entity


class _RefusingBus(EmbeddedBus):
    """A bus whose broker refuses every publish (confirmation never comes)."""

    async def publish(self, messages: Sequence[Message]) -> None:
        raise ServiceUnavailable("the broker refused the batch")


async def test_a_failed_publish_leaves_the_batch_unpublished(
    outbox_db: Database, sqlite_db: Database
) -> None:
    outbox, topic = Outbox(), unique("t")
    async with outbox_db.transaction() as tx:
        await outbox.add(tx, [encode(event("order-x", n), topic) for n in range(2)])
    relay = OutboxRelay(outbox_db, _RefusingBus("embedded://", database=sqlite_db), outbox)

    with pytest.raises(ServiceUnavailable):
        await relay.relay_once()
    assert await _unpublished_keys(outbox_db) == ["order-x", "order-x"]  # the mark was rolled back
