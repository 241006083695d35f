"""The bus contract against the real Apache Kafka broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from strowger.bus.kafka import KafkaBus, bootstrap_servers, next_offsets
from strowger.bus.port import Bus, Delivery
from strowger.errors import ConfigError, ServiceUnavailable
from strowger.events.envelope import Category
from strowger.events.topics import Topic
from tests.conftest import unique
from tests.contract.bus_contract import BusContract, drain, message

pytestmark = pytest.mark.integration


class TestKafkaBus(BusContract):
    @pytest.fixture
    async def bus(self, kafka_url: str) -> AsyncIterator[Bus]:
        bus = KafkaBus(kafka_url, publish_timeout=10.0)
        await bus.start()
        yield bus
        await bus.stop()


async def test_start_fails_fast_when_no_broker_answers() -> None:
    bus = KafkaBus("kafka://127.0.0.1:1", connect_timeout=1.0)
    with pytest.raises(ServiceUnavailable):
        await bus.start()


async def test_publish_on_a_stopped_bus_is_reported_as_unavailable(kafka_url: str) -> None:
    bus = KafkaBus(kafka_url)
    with pytest.raises(ServiceUnavailable):
        await bus.publish([message("any", "k", 1)])


async def test_deliveries_carry_the_broker_append_time(kafka_url: str) -> None:
    bus = KafkaBus(kafka_url)
    await bus.start()
    topic = unique("kafka.time")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    member = bus.subscriber(unique("g"), [topic])
    await member.start()
    try:
        before = datetime.now(UTC) - timedelta(seconds=1)  # clock granularity: ms on the broker
        await bus.publish([message(topic, "order-1", 1)])
        after = datetime.now(UTC) + timedelta(seconds=1)
        [delivery] = await drain(member, 1)
    finally:
        await member.stop()
        await bus.stop()
    assert before <= delivery.timestamp <= after
    assert delivery.offset == 0 and delivery.partition == 0


def test_a_commit_stores_the_offset_after_the_highest_delivery_of_each_partition() -> None:
    def delivery(topic: str, partition: int, offset: int) -> Delivery:
        return Delivery(message("t", "k", offset), partition, offset, datetime.now(UTC))

    deliveries = [delivery("t", 0, 4), delivery("t", 0, 2), delivery("t", 1, 0), delivery("t", 0, 7)]
    assert [(tp.topic, tp.partition, tp.offset) for tp in next_offsets(deliveries)] == [
        ("t", 0, 8),
        ("t", 1, 1),
    ]


def test_the_url_names_the_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://a:9092,b:9093") == "a:9092,b:9093"
    with pytest.raises(ConfigError):
        bootstrap_servers("kafka://")
