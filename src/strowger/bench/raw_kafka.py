"""Raw Kafka clients as benchmark peers: what the broker gives without Strowger in the way.

Each function creates a fresh topic, then:

1. *flood* — a consumer group member is joined first, then N messages are
   produced as fast as the client allows (acks=all, idempotent, linger 5 ms)
   while the member consumes them: gives produce events/s;
2. *paced* — 2,000 more messages at 2,000/s (below saturation, so queueing
   does not swamp the figure): gives the publish→consume latency of each (the
   send time travels in the first 8 bytes of the value);
3. *catch-up* — a new group reads everything back from the start: gives
   consume events/s with the topic already full.

Both clients get the same settings, the same topic layout and the same
messages, so their figures compare. The topic is deleted afterwards.

    python -m strowger.bench.raw_kafka --url kafka://127.0.0.1:9092 --messages 50000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from strowger.bus.kafka import bootstrap_servers

Progress = Callable[[str, float], None]

PARTITIONS = 6
KEYS = 1000  # distinct entity keys, spread over the partitions
PACED = 2000  # messages in the latency phase
PACED_RATE = 2000.0  # messages per second in the latency phase
LINGER_MS = 5
_STAMP = struct.Struct(">q")  # wall-clock nanoseconds at send, first 8 bytes of every value


@dataclass(frozen=True, slots=True)
class RawKafkaFigures:
    """One client's figures for one run."""

    client: str
    messages: int
    message_bytes: int
    produce_per_second: float
    consume_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float


def _no_progress(_description: str, _fraction: float) -> None:
    pass


def _value(size: int, mark: bytes = b"F") -> bytes:
    """The send time, a phase mark (F = flood, P = paced), then padding up to ``size``."""
    return _STAMP.pack(time.time_ns()) + mark + b"x" * max(0, size - _STAMP.size - 1)


def _is_paced(value: bytes) -> bool:
    return value[_STAMP.size : _STAMP.size + 1] == b"P"


def _pace(started: float, n: int) -> float:
    """Seconds to wait before message ``n`` of the paced phase."""
    return started + n / PACED_RATE - time.perf_counter()


def _latency_ms(value: bytes, received_ns: int) -> float:
    sent: int = _STAMP.unpack_from(value)[0]
    return (received_ns - sent) / 1e6


def _figures(
    client: str, size: int, count: int, produce_seconds: float, consume_rate: float, latencies: list[float]
) -> RawKafkaFigures:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return RawKafkaFigures(
        client=client,
        messages=count,
        message_bytes=size,
        produce_per_second=count / produce_seconds,
        consume_per_second=consume_rate,
        latency_p50_ms=cuts[49],
        latency_p99_ms=cuts[98],
    )


def _rate(first_ns: int, last_ns: int, count: int) -> float:
    return (count - 1) / max((last_ns - first_ns) / 1e9, 1e-9)


class _Topic:
    """A fresh benchmark topic, deleted on exit."""

    def __init__(self, servers: str) -> None:
        self.admin = AdminClient({"bootstrap.servers": servers})
        self.name = f"bench.raw.{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        futures = self.admin.create_topics(
            [NewTopic(self.name, num_partitions=PARTITIONS, replication_factor=1)]
        )
        futures[self.name].result(timeout=30)
        return self.name

    def __exit__(self, *_exc: object) -> None:
        self.admin.delete_topics([self.name])[self.name].result(timeout=30)


# -- confluent-kafka (librdkafka), its own loops on threads ------------------


def _confluent_consumer(servers: str, topic: str) -> Consumer:
    joined = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"bench.{uuid.uuid4().hex[:10]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic], on_assign=lambda _c, _p: joined.set())
    while not joined.is_set():
        consumer.poll(0.1)
    return consumer


def _confluent_read(
    consumer: Consumer, count: int, on_record: Callable[[bytes, int], None]
) -> tuple[int, int]:
    """Consume ``count`` records; (first, last) receive times in ns."""
    first = last = 0
    seen = 0
    while seen < count:
        # poll() returns on the first message; consume(n, 0) then takes what is already there.
        # (consume(n, timeout) alone waits the whole timeout to fill n: ~50 ms of latency.)
        first_record = consumer.poll(0.1)
        records = [first_record, *consumer.consume(999, 0)] if first_record is not None else []
        for record in records:
            if record.error() is not None:
                continue
            last = time.time_ns()
            first = first or last
            on_record(record.value() or b"", last)
            seen += 1
    return first, last


def _record_paced(latencies: list[float]) -> Callable[[bytes, int], None]:
    def record(value: bytes, received_ns: int) -> None:
        if _is_paced(value):
            latencies.append(_latency_ms(value, received_ns))

    return record


def _confluent_produce(producer: Producer, topic: str, n: int, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, b"order-%d" % (n % KEYS))
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.01)  # local queue full: serve delivery reports to make room


def _confluent_run(servers: str, count: int, size: int, progress: Progress) -> RawKafkaFigures:
    with _Topic(servers) as topic:
        live = _confluent_consumer(servers, topic)
        latencies: list[float] = []
        reader = threading.Thread(
            target=_confluent_read, args=(live, count + PACED, _record_paced(latencies))
        )
        reader.start()
        producer = Producer(
            {"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True, "linger.ms": LINGER_MS}
        )
        progress("confluent-kafka: flood", 0.0)
        started = time.perf_counter()
        for n in range(count):
            _confluent_produce(producer, topic, n, _value(size))
        producer.flush(60)
        produce_seconds = time.perf_counter() - started
        progress("confluent-kafka: paced", 0.4)
        started = time.perf_counter()
        for n in range(PACED):
            time.sleep(max(0.0, _pace(started, n)))
            _confluent_produce(producer, topic, n, _value(size, b"P"))
        producer.flush(60)
        reader.join()
        live.close()
        progress("confluent-kafka: catch-up read", 0.7)
        catch_up = _confluent_consumer(servers, topic)
        first, last = _confluent_read(catch_up, count + PACED, lambda _value, _now: None)
        catch_up.close()
    progress("confluent-kafka: done", 1.0)
    return _figures(
        "confluent-kafka", size, count, produce_seconds, _rate(first, last, count + PACED), latencies
    )


async def confluent_roundtrip(
    url: str, messages: int = 50_000, size: int = 256, progress: Progress = _no_progress
) -> RawKafkaFigures:
    """confluent-kafka's own produce/consume loops (in threads, as librdkafka blocks)."""
    return await asyncio.to_thread(_confluent_run, bootstrap_servers(url), messages, size, progress)


# -- aiokafka (pure asyncio) --------------------------------------------------


async def _aiokafka_consumer(servers: str, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    joined = asyncio.Event()

    class _Joined(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: object) -> None:
            pass

        async def on_partitions_assigned(self, assigned: object) -> None:
            joined.set()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"bench.{uuid.uuid4().hex[:10]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    consumer.subscribe([topic], listener=_Joined())
    await asyncio.wait_for(joined.wait(), 30)
    return consumer


async def _aiokafka_read(
    consumer: Any, count: int, on_record: Callable[[bytes, int], None]
) -> tuple[int, int]:
    first = last = 0
    seen = 0
    while seen < count:
        batches = await consumer.getmany(timeout_ms=100, max_records=1000)
        for records in batches.values():
            for record in records:
                last = time.time_ns()
                first = first or last
                on_record(record.value, last)
                seen += 1
    return first, last


async def aiokafka_roundtrip(
    url: str, messages: int = 50_000, size: int = 256, progress: Progress = _no_progress
) -> RawKafkaFigures:
    """aiokafka's own produce/consume loops, on the event loop."""
    from aiokafka import AIOKafkaProducer

    servers = bootstrap_servers(url)
    with _Topic(servers) as topic:
        live = await _aiokafka_consumer(servers, topic)
        latencies: list[float] = []
        reader = asyncio.create_task(_aiokafka_read(live, messages + PACED, _record_paced(latencies)))
        producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=LINGER_MS
        )
        await producer.start()
        progress("aiokafka: flood", 0.0)
        started = time.perf_counter()
        sent = [
            await producer.send(topic, _value(size), key=b"order-%d" % (n % KEYS)) for n in range(messages)
        ]
        await asyncio.gather(*sent)
        produce_seconds = time.perf_counter() - started
        progress("aiokafka: paced", 0.4)
        started = time.perf_counter()
        sent = []
        for n in range(PACED):
            await asyncio.sleep(max(0.0, _pace(started, n)))
            sent.append(await producer.send(topic, _value(size, b"P"), key=b"order-%d" % (n % KEYS)))
        await asyncio.gather(*sent)
        await producer.stop()
        await reader
        await live.stop()
        progress("aiokafka: catch-up read", 0.7)
        catch_up = await _aiokafka_consumer(servers, topic)
        first, last = await _aiokafka_read(catch_up, messages + PACED, lambda _value, _now: None)
        await catch_up.stop()
    progress("aiokafka: done", 1.0)
    return _figures(
        "aiokafka", size, messages, produce_seconds, _rate(first, last, messages + PACED), latencies
    )


async def both(url: str, messages: int = 50_000, size: int = 256) -> list[RawKafkaFigures]:
    """Both clients, one after the other, in the same run."""
    return [await confluent_roundtrip(url, messages, size), await aiokafka_roundtrip(url, messages, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="kafka://127.0.0.1:9092")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    for figures in asyncio.run(both(args.url, args.messages, args.size)):
        print(asdict(figures))


if __name__ == "__main__":
    main()
