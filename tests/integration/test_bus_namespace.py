"""A namespaced bus passes the same contract, and two namespaces never see each other's events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from strowger.bus.kafka import KafkaBus
from strowger.bus.namespace import NamespacedBus
from strowger.bus.port import Bus
from strowger.events.envelope import Category
from strowger.events.topics import Topic
from tests.conftest import unique
from tests.contract.bus_contract import BusContract, drain, message, quiet

pytestmark = pytest.mark.integration


class TestNamespacedKafka(BusContract):
    @pytest.fixture
    async def bus(self, kafka_url: str) -> AsyncIterator[Bus]:
        bus = NamespacedBus(KafkaBus(kafka_url), unique("ns"))
        await bus.start()
        yield bus
        await bus.stop()


async def test_two_namespaces_on_one_broker_are_isolated(kafka_url: str) -> None:
    first, second = (
        NamespacedBus(KafkaBus(kafka_url), unique("a")),
        NamespacedBus(KafkaBus(kafka_url), unique("b")),
    )
    topic = "bss.ordering.events"  # the same logical name in both
    for bus in (first, second):
        await bus.start()
        await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=2)])
    reader_first, reader_second = first.subscriber("billing", [topic]), second.subscriber("billing", [topic])
    try:
        await reader_first.start()
        await reader_second.start()
        await first.publish([message(topic, "order-1", 1)])
        received = await drain(reader_first, 1)
        assert received[0].message.topic == topic  # the logical name comes back
        assert not await quiet(reader_second, 2.0)
        lag = await first.lag("billing", [topic])
        assert {sample.topic for sample in lag} == {topic}
    finally:
        for reader in (reader_first, reader_second):
            await reader.stop()
        for bus in (first, second):
            await bus.stop()
