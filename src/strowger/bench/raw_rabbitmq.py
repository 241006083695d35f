"""Raw aio-pika as the benchmark peer of the RabbitMQ bus: what the broker gives without Strowger.

One fresh durable classic queue, persistent messages, publisher confirms
awaited per batch (as the bus does), then:

1. *flood* — a consumer (prefetch 500) is attached first, then N messages are
   published as fast as confirms allow while it consumes: gives publish events/s;
2. *paced* — 2,000 more messages at 2,000/s (below saturation, so queueing
   does not swamp the figure): gives publish→consume latency (the send time
   travels in the first 8 bytes of the body);
3. *catch-up* — N messages are published with nobody consuming, then read
   back: gives consume events/s with the queue already full.

The queue is deleted afterwards.

    python -m strowger.bench.raw_rabbitmq --url amqp://guest:guest@127.0.0.1:5672/ --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

_STAMP = struct.Struct(">q")
BATCH = 100  # messages whose confirms are awaited together
PACED_MESSAGES = 2_000
PACED_RATE = 2_000.0  # messages per second

Progress = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class RawRabbitFigures:
    """One run's figures."""

    client: str
    messages: int
    message_bytes: int
    publish_per_second: float
    consume_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float


def _no_progress(_description: str, _fraction: float) -> None:
    pass


def _body(size: int) -> bytes:
    return _STAMP.pack(time.time_ns()) + b"x" * max(0, size - _STAMP.size)


async def _publish(channel: AbstractChannel, queue: str, count: int, size: int) -> float:
    """Publish ``count`` messages, confirms awaited per batch; returns the seconds it took."""
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        sends = [
            channel.default_exchange.publish(
                aio_pika.Message(_body(size), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )
            for _ in range(first, min(first + BATCH, count))
        ]
        await asyncio.gather(*sends)
    return time.perf_counter() - started


async def _publish_paced(channel: AbstractChannel, queue: str, count: int, size: int) -> None:
    started = time.perf_counter()
    for n in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(_body(size), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
        )
        delay = started + (n + 1) / PACED_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


class _Counter:
    """Counts deliveries (acking them) and records each one's latency."""

    def __init__(self) -> None:
        self.received = 0
        self.latencies_ms: list[float] = []
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.received, self.target = 0, count
        self.latencies_ms.clear()
        self.done.clear()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        sent_ns = _STAMP.unpack_from(message.body)[0]
        self.latencies_ms.append((time.time_ns() - sent_ns) / 1e6)
        await message.ack()
        self.received += 1
        if self.received >= self.target:
            self.done.set()


async def _consume(queue: AbstractQueue, counter: _Counter, count: int) -> tuple[str, float]:
    """Attach a consumer expecting ``count`` messages; returns its tag and the start time."""
    counter.expect(count)
    started = time.perf_counter()
    return await queue.consume(counter), started


async def rabbitmq_roundtrip(
    url: str, messages: int = 20_000, size: int = 256, progress: Progress = _no_progress
) -> RawRabbitFigures:
    """Flood, paced and catch-up phases against one fresh queue (see the module docstring)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue(f"strowger.bench.{uuid.uuid4().hex[:10]}", durable=True)
        counter = _Counter()
        try:
            progress("aio-pika: flood", 0.0)
            tag, _ = await _consume(queue, counter, messages)
            publish_seconds = await _publish(channel, queue.name, messages, size)
            await asyncio.wait_for(counter.done.wait(), timeout=120)

            progress("aio-pika: paced", 0.4)
            counter.expect(PACED_MESSAGES)
            await _publish_paced(channel, queue.name, PACED_MESSAGES, size)
            await asyncio.wait_for(counter.done.wait(), timeout=60)
            latencies = sorted(counter.latencies_ms)
            await queue.cancel(tag)

            progress("aio-pika: catch-up", 0.7)
            await _publish(channel, queue.name, messages, size)
            tag, started = await _consume(queue, counter, messages)
            await asyncio.wait_for(counter.done.wait(), timeout=120)
            consume_seconds = time.perf_counter() - started
            await queue.cancel(tag)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
        progress("aio-pika: done", 1.0)
    finally:
        await connection.close()
    return RawRabbitFigures(
        client="aio-pika",
        messages=messages,
        message_bytes=size,
        publish_per_second=messages / publish_seconds,
        consume_per_second=messages / consume_seconds,
        latency_p50_ms=statistics.median(latencies),
        latency_p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    figures = asyncio.run(rabbitmq_roundtrip(args.url, args.messages, args.size))
    print(asdict(figures))


if __name__ == "__main__":
    main()
