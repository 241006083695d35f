"""The bus contract on RabbitMQ, plus what is particular to its design (leases, command queues)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from strowger.bus.port import Bus
from strowger.bus.rabbitmq import RabbitBus
from strowger.errors import PermanentError
from strowger.events.envelope import Category
from strowger.events.topics import Topic
from tests.conftest import delete_declared_topics, unique
from tests.contract.bus_contract import PARTITIONS, BusContract, drain, message, quiet

pytestmark = pytest.mark.integration


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[RabbitBus]:
    bus = RabbitBus(rabbitmq_url)
    await bus.start()
    yield bus
    await delete_declared_topics(bus)
    await bus.stop()


class TestRabbitBus(BusContract):
    @pytest.fixture
    async def bus(self, rabbit: RabbitBus) -> AsyncIterator[Bus]:
        yield rabbit

    @pytest.fixture
    async def topic(self, rabbit: RabbitBus) -> AsyncIterator[str]:
        name = unique("contract")
        await rabbit.ensure_topics([Topic(name, category=Category.DOMAIN, partitions=PARTITIONS)])
        yield name
        await rabbit.delete_topic(name)


async def test_one_key_keeps_its_order_within_a_batch(rabbit: RabbitBus) -> None:
    name = unique("batch")
    await rabbit.ensure_topics([Topic(name, Category.DOMAIN, partitions=2)])
    member = rabbit.subscriber(unique("g"), [name])
    await member.start()
    try:
        await rabbit.publish([message(name, "order-1", n) for n in range(200)])
        received = await drain(member, 200)
        assert [int(d.message.value) for d in received] == list(range(200))
    finally:
        await member.stop()
        await rabbit.delete_topic(name)


async def test_a_member_that_leaves_hands_its_partitions_to_the_others(rabbit: RabbitBus) -> None:
    name = unique("leave")
    await rabbit.ensure_topics([Topic(name, Category.DOMAIN, partitions=4)])
    group = unique("g")
    first, second = rabbit.subscriber(group, [name]), rabbit.subscriber(group, [name])
    await first.start()
    await second.start()
    try:
        await rabbit.publish([message(name, f"order-{k}", 0) for k in range(20)])
        await drain(first, 1)  # at least one delivery: the first member holds partitions
        await first.stop()
        await rabbit.publish([message(name, f"order-{k}", 1) for k in range(20)])
        round_one: set[str] = set()
        deadline = asyncio.get_running_loop().time() + 30
        while len(round_one) < 20:  # round 1 whole (plus whatever the first member left of round 0)
            assert asyncio.get_running_loop().time() < deadline, f"second member got {sorted(round_one)}"
            batch = await second.fetch(max_messages=100, timeout=0.5)
            await second.commit(batch)
            round_one |= {d.message.key for d in batch if d.message.value == b"1"}
    finally:
        await second.stop()
        await rabbit.delete_topic(name)


async def test_a_command_topic_is_a_queue_acknowledged_on_commit(rabbit: RabbitBus) -> None:
    name = unique("commands")
    await rabbit.ensure_topics([Topic(name, Category.COMMAND, partitions=2, replayable=False)])
    group = unique("g")
    member = rabbit.subscriber(group, [name])
    await member.start()
    try:
        await rabbit.publish([message(name, "order-1", n) for n in range(6)])
        first = await drain(member, 6, commit=False)
        assert [int(d.message.value) for d in first] == list(range(6))
        await member.commit(first[:2])
        assert sum(s.lag for s in await rabbit.lag(group, [name])) == 0  # all six are out of the queue
        await member.stop()
        member = rabbit.subscriber(group, [name])
        await member.start()
        again = await drain(member, 4)
        assert [int(d.message.value) for d in again] == [2, 3, 4, 5]
        assert all(d.redelivered for d in again)
        assert not await quiet(member)
        with pytest.raises(PermanentError):
            from strowger.bus.port import ReplayPoint

            await member.rewind(ReplayPoint(offset=0))
    finally:
        await member.stop()
        await rabbit.delete_topic(name)
