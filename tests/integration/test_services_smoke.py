"""Smoke test: the real services answer, used through their ordinary clients."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


async def test_postgresql_answers(postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
        cursor = await connection.execute("SELECT current_user, current_database(), version()")
        user, database, version = await cursor.fetchone() or ("", "", "")
    assert (user, database) == ("strowger", "strowger")
    assert version.startswith("PostgreSQL 15")


def test_kafka_round_trips_a_message(kafka_url: str) -> None:
    servers = kafka_url.removeprefix("kafka://")
    topic = f"smoke.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": servers})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": servers, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                assert message.value() == b"hello"
                return
        pytest.fail("no message from Kafka within 60s")
    finally:
        consumer.close()


async def test_rabbitmq_round_trips_a_message(rabbitmq_url: str) -> None:
    connection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"smoke.{uuid.uuid4().hex[:8]}", auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=queue.name)
        for _ in range(50):
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                assert message.body == b"hello"
                return
            await asyncio.sleep(0.1)
        pytest.fail("no message from RabbitMQ")
