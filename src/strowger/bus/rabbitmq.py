"""The RabbitMQ bus (3.10+, AMQP 0.9.1 only, no plugin): Kafka-like partitions built from queues.

Topology, per topic ``T`` with ``P`` partitions (docs/rabbitmq.md explains the trade-offs):

* a durable **topic exchange** ``T``; a message goes out with routing key ``p<N>``,
  ``N = partition_for(key, P)`` (Kafka's murmur2, so every backend agrees);
* ``P`` **partition queues** ``T.p<N>`` bound to it: *stream* queues for replayable
  topics (shared by every group, read at an offset like a Kafka partition), *quorum*
  queues with single-active-consumer for command topics (one group, ack = commit);
* per consumer group, a **lease queue** holding one token message per partition. A
  member owns partition N while it holds token N unacknowledged; the broker hands the
  tokens of a dead or stopped member to the others, and a member holding more than
  ``ceil(P / members)`` gives the extra tokens back (once its deliveries there are
  committed), so members share the partitions without overlap;
* per group and stream partition, an **offset queue** (``x-max-length=1``,
  ``drop-head``: a last-value store) holding the group's committed offset.

Publishing waits for the publisher confirms of the whole batch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError, ChannelLockedResource, ChannelNotFoundEntity

from strowger.bus.partitioning import partition_for
from strowger.bus.port import Bus, Delivery, LagSample, ReplayPoint, Subscriber
from strowger.errors import PermanentError, ServiceUnavailable
from strowger.events.envelope import Message
from strowger.events.topics import Topic, topic_named
from strowger.settings import BusKind, redact_url

log = logging.getLogger(__name__)

KEY_HEADER = "x-strowger-key"
TIME_HEADER = "x-strowger-ts"  # publish time, epoch milliseconds (AMQP's timestamp has seconds only)
STREAM_OFFSET = "x-stream-offset"
MEMBERSHIP_EXCHANGE = "strowger.membership"
OFFSET_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-length": 1, "x-overflow": "drop-head"}

REBALANCE_INTERVAL = 0.5  # seconds between fair-share checks when nothing happens
RELEASE_GRACE = 10.0  # seconds a partition with uncommitted deliveries is kept before it is given up anyway
FETCH_LINGER = 0.005  # seconds fetch waits after the first delivery for the rest of a burst
STOP_TIMEOUT = 10.0  # seconds a stopping member may take to finish a lease change before it is cancelled
PROBE_FIRST_WAIT = 1.0  # seconds a stream probe waits for the first message
PROBE_IDLE_WAIT = 0.25  # seconds of silence after which a stream probe has seen the end

# What a lost connection or channel looks like from aio-pika / aiormq.
BROKER_ERRORS: tuple[type[BaseException], ...] = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError)


def partition_queue(topic: str, partition: int) -> str:
    return f"{topic}.p{partition}"


def lease_queue(group: str, topic: str) -> str:
    return f"strowger.lease.{group}.{topic}"


def offset_queue(group: str, topic: str, partition: int) -> str:
    return f"strowger.offset.{group}.{topic}.p{partition}"


def partition_queue_arguments(topic: Topic) -> dict[str, Any]:
    if topic.replayable:
        return {"x-queue-type": "stream"}
    return {"x-queue-type": "quorum", "x-single-active-consumer": True}


class RabbitBus(Bus):
    """The bus on RabbitMQ. ``url`` is ``amqp://user:password@host:port/vhost``.

    Options: ``prefetch`` (unacknowledged deliveries per partition reader, default 500),
    ``publish_timeout`` (seconds to wait for a batch's confirms, default 30).
    """

    kind: BusKind = "rabbitmq"

    def __init__(self, url: str, *, prefetch: int = 500, publish_timeout: float = 30.0) -> None:
        self.url = url
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._topics: dict[str, Topic] = {}
        self._declared_groups: set[tuple[str, str]] = (
            set()
        )  # (group, topic) seen by this bus, for delete_topic

    async def start(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection = await aio_pika.connect_robust(self.url)
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            await self._channel.declare_exchange(
                MEMBERSHIP_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
            )
        except BROKER_ERRORS as exc:
            await self.stop()
            raise ServiceUnavailable(
                f"cannot connect to RabbitMQ at {redact_url(self.url)}: {exc!r}"
            ) from exc

    async def stop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges.clear()
        if connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await connection.close()

    async def ensure_topics(self, topics: Sequence[Topic]) -> None:
        channel = self._publishing_channel()
        try:
            for topic in topics:
                exchange = await channel.declare_exchange(
                    topic.name, aio_pika.ExchangeType.TOPIC, durable=True
                )
                for partition in range(topic.partitions):
                    queue = await channel.declare_queue(
                        partition_queue(topic.name, partition),
                        durable=True,
                        arguments=partition_queue_arguments(topic),
                    )
                    await queue.bind(exchange, routing_key=f"p{partition}")
                self._exchanges[topic.name] = exchange
                self._topics[topic.name] = topic
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(f"cannot declare topics on RabbitMQ: {exc!r}") from exc

    def declared_topics(self) -> list[str]:
        """The topics this bus declared (ensured or first used), for :meth:`delete_topic`."""
        return sorted(self._topics)

    async def topic(self, name: str) -> Topic:
        """The topic's definition: as ensured, else the catalogue's (declared on first use)."""
        if name not in self._topics:
            await self.ensure_topics([topic_named(name)])
        return self._topics[name]

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        for name in {m.topic for m in messages}:
            await self.topic(name)
        # Issued in order on one channel (so per-key order holds), confirmed together.
        sends = [self._send(message) for message in messages]
        results = await asyncio.gather(*sends, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise ServiceUnavailable(
                f"RabbitMQ did not confirm {len(failures)} of {len(messages)} messages: {failures[0]!r}"
            ) from failures[0]

    async def _send(self, message: Message) -> None:
        topic = self._topics[message.topic]
        now = datetime.now(UTC)
        amqp_message = aio_pika.Message(
            body=message.value,
            headers={**message.headers, KEY_HEADER: message.key, TIME_HEADER: int(now.timestamp() * 1000)},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=now,
        )
        routing_key = f"p{partition_for(message.key, topic.partitions)}"
        await self._exchanges[message.topic].publish(
            amqp_message, routing_key=routing_key, mandatory=True, timeout=self.publish_timeout
        )

    def subscriber(self, group: str, topics: Sequence[str]) -> Subscriber:
        for name in topics:
            self._declared_groups.add((group, name))
        return RabbitSubscriber(self, group, topics)

    async def lag(self, group: str, topics: Sequence[str]) -> list[LagSample]:
        channel = await self._open_channel()
        try:
            samples: list[LagSample] = []
            for name in topics:
                topic = await self.topic(name)
                samples.extend(
                    await asyncio.gather(
                        *(self._lag_of(channel, group, topic, p) for p in range(topic.partitions))
                    )
                )
            return samples
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(f"cannot read lag from RabbitMQ: {exc!r}") from exc
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()

    async def _lag_of(self, channel: AbstractChannel, group: str, topic: Topic, partition: int) -> LagSample:
        queue_name = partition_queue(topic.name, partition)
        if not topic.replayable:
            # A queue forgets what was acknowledged: the lag is what waits in it.
            queue = await channel.declare_queue(queue_name, passive=True)
            waiting = queue.declaration_result.message_count or 0
            return LagSample(topic.name, partition, group, committed=0, end=waiting)
        end = (await scan_stream(channel, queue_name, "last")).end
        offsets = await channel.declare_queue(
            offset_queue(group, topic.name, partition), durable=True, arguments=OFFSET_QUEUE_ARGUMENTS
        )
        committed = await read_offset(offsets)
        return LagSample(topic.name, partition, group, committed=committed or 0, end=end)

    async def offset_at(self, channel: AbstractChannel, topic: str, partition: int, moment: datetime) -> int:
        """The offset of the first message of a stream partition published at or after ``moment``."""
        queue_name = partition_queue(topic, partition)
        # The broker seeks by chunk and to the second: start a second early, then filter exactly.
        start = moment.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=1)
        scan = await scan_stream(channel, queue_name, start, until=lambda _, at: at >= moment)
        if scan.found is not None:
            return scan.found
        if scan.end:
            return scan.end
        return (await scan_stream(channel, queue_name, "last")).end

    async def delete_topic(self, name: str, groups: Sequence[str] = ()) -> None:
        """Delete a topic's exchange and partition queues, and its consumer groups' state.

        The groups are those this bus subscribed with, and ``groups`` (another process's, whose
        names the caller knows). An administrative helper (tests, decommissioning): not part of
        the bus port.
        """
        topic = await self.topic(name)
        channel = await self._open_channel()
        try:
            for partition in range(topic.partitions):
                await channel.queue_delete(partition_queue(name, partition))
            await channel.exchange_delete(name)
            declared = {group for group, topic_name in self._declared_groups if topic_name == name}
            for group in sorted(declared | set(groups)):
                for queue in (lease_queue(group, name), f"{lease_queue(group, name)}.seeded"):
                    await channel.queue_delete(queue)
                for partition in range(topic.partitions):
                    await channel.queue_delete(offset_queue(group, name, partition))
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()
        self._topics.pop(name, None)
        self._exchanges.pop(name, None)

    def _publishing_channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("RabbitBus is not started: call start() first")
        return self._channel

    async def _open_channel(self) -> AbstractChannel:
        if self._connection is None:
            raise RuntimeError("RabbitBus is not started: call start() first")
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.prefetch)
        return channel


@dataclass(frozen=True, slots=True)
class StreamScan:
    found: int | None  # offset of the first message that matched ``until``
    end: int  # one past the highest offset seen (0 if none)


async def scan_stream(
    channel: AbstractChannel,
    queue_name: str,
    start: str | int | datetime,
    until: Callable[[int, datetime], bool] | None = None,
) -> StreamScan:
    """Read a stream from ``start`` until a message matches ``until`` or the stream goes quiet.

    AMQP 0.9.1 has no "end offset" query for streams, so the end is found by
    reading from the last chunk (``start="last"``) until nothing more arrives.
    """
    queue = await channel.declare_queue(queue_name, passive=True)
    seen: asyncio.Queue[tuple[int, datetime]] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        seen.put_nowait((stream_offset(message), published_at(message)))
        with contextlib.suppress(*BROKER_ERRORS):
            await message.ack()

    tag = await queue.consume(on_message, arguments={STREAM_OFFSET: start})
    end = 0
    try:
        wait = PROBE_FIRST_WAIT
        while True:
            try:
                async with asyncio.timeout(wait):
                    offset, at = await seen.get()
            except TimeoutError:
                return StreamScan(found=None, end=end)
            wait = PROBE_IDLE_WAIT
            end = max(end, offset + 1)
            if until is not None and until(offset, at):
                return StreamScan(found=offset, end=end)
    finally:
        with contextlib.suppress(*BROKER_ERRORS):
            await queue.cancel(tag)


async def read_offset(queue: AbstractQueue) -> int | None:
    """The committed offset in a last-value queue, left in place (None if never committed)."""
    message = await queue.get(no_ack=False, fail=False)
    if message is None:
        return None
    # Requeued to the head: a commit racing this read drops it (drop-head), never the reverse.
    await message.reject(requeue=True)
    return int(message.body)


def stream_offset(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(STREAM_OFFSET)
    if not isinstance(value, int):
        raise ServiceUnavailable(f"a stream delivery without {STREAM_OFFSET}: is the queue a stream?")
    return value


def published_at(message: AbstractIncomingMessage) -> datetime:
    millis = (message.headers or {}).get(TIME_HEADER)
    if isinstance(millis, int):
        return datetime.fromtimestamp(millis / 1000, UTC)
    if message.timestamp is not None:
        return message.timestamp.replace(tzinfo=message.timestamp.tzinfo or UTC)
    return datetime.now(UTC)


def to_message(topic: str, message: AbstractIncomingMessage) -> Message:
    headers = message.headers or {}
    return Message(
        topic=topic,
        key=str(headers.get(KEY_HEADER, "")),
        headers={name: str(value) for name, value in headers.items() if not name.startswith("x-")},
        value=message.body,
    )


@dataclass(eq=False)
class _Lease:
    """One partition held by this member: the token that proves it, and the reader on it.

    A rewind replaces the lease (same token, new reader), so anything left from
    the old reader — buffered deliveries, late commits — is recognised and ignored.
    """

    topic: Topic
    partition: int
    token: AbstractIncomingMessage
    channel: AbstractChannel
    committed: int  # streams: next offset the group reads; queues: deliveries acknowledged
    fetched: int  # next offset after the last delivery handed out
    offsets: AbstractQueue | None  # the group's last-value store (streams only)
    closed: bool = False
    over_share_since: float | None = None
    sequence: int = 0  # queues: per-reader counter standing in for an offset

    @property
    def clean(self) -> bool:
        """Whether every delivery handed out is committed: it can be given up without a redelivery."""
        return self.committed >= self.fetched


@dataclass(frozen=True, slots=True)
class _Token:
    lease: _Lease
    message: AbstractIncomingMessage


@dataclass(eq=False)
class _Session:
    """One connection's worth of membership; replaced as a whole after a connection loss."""

    connection: AbstractConnection
    control: AbstractChannel
    offsets: AbstractChannel
    lease_queues: dict[str, AbstractQueue] = field(default_factory=dict)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    events: asyncio.Queue[tuple[str, AbstractIncomingMessage] | None] = field(default_factory=asyncio.Queue)


class RabbitSubscriber(Subscriber):
    """A member of a consumer group: holds lease tokens and reads the partitions they name."""

    def __init__(self, bus: RabbitBus, group: str, topics: Sequence[str]) -> None:
        self.group = group
        self.topics = tuple(topics)
        self._bus = bus
        self._topics: dict[str, Topic] = {}
        self._leases: dict[tuple[str, int], _Lease] = {}
        self._buffer: deque[tuple[_Lease, AbstractIncomingMessage]] = deque()
        self._arrived = asyncio.Event()
        self._lock = asyncio.Lock()  # lease changes (acquire, release, rewind) one at a time
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._task is not None:
            return
        for name in self.topics:
            self._topics[name] = await self._bus.topic(name)
        session = await self._join()
        self._task = asyncio.create_task(self._run(session), name=f"rabbit-member-{self.group}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if self._session is not None:
            self._session.lost.set()  # let the manager finish what it is doing, then leave
            self._session.events.put_nowait(None)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- membership ---------------------------------------------------------------------------

    async def _join(self) -> _Session:
        try:
            connection = await aio_pika.connect(self._bus.url)
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(
                f"cannot connect to RabbitMQ at {redact_url(self._bus.url)}: {exc!r}"
            ) from exc
        try:
            session = _Session(
                connection=connection,
                control=await connection.channel(),
                offsets=await connection.channel(publisher_confirms=True),
            )
            for channel in (connection, session.control, session.offsets):
                channel.close_callbacks.add(lambda *_: session.lost.set())
            for topic in self._topics.values():
                await self._seed_tokens(connection, topic)
            await self._listen_for_joins(session)
            for topic in self._topics.values():
                await session.control.set_qos(prefetch_count=topic.partitions)
                queue = await session.control.declare_queue(lease_queue(self.group, topic.name), durable=True)
                await queue.consume(self._token_handler(session, topic.name))
                session.lease_queues[topic.name] = queue
            exchange = await session.control.get_exchange(MEMBERSHIP_EXCHANGE)
            for topic in self._topics.values():
                await exchange.publish(
                    aio_pika.Message(b"joined"), routing_key=lease_queue(self.group, topic.name)
                )
        except BROKER_ERRORS as exc:
            with contextlib.suppress(*BROKER_ERRORS):
                await connection.close()
            raise ServiceUnavailable(f"cannot join group {self.group} on RabbitMQ: {exc!r}") from exc
        self._session = session
        return session

    def _token_handler(self, session: _Session, topic: str) -> Callable[[AbstractIncomingMessage], Any]:
        async def on_token(token: AbstractIncomingMessage) -> None:
            session.events.put_nowait((topic, token))

        return on_token

    async def _listen_for_joins(self, session: _Session) -> None:
        """A member that joins says so, so the others give up their extra partitions at once."""
        exchange = await session.control.get_exchange(MEMBERSHIP_EXCHANGE)
        queue = await session.control.declare_queue(exclusive=True, auto_delete=True)
        for topic in self._topics.values():
            await queue.bind(exchange, routing_key=lease_queue(self.group, topic.name))

        async def on_join(message: AbstractIncomingMessage) -> None:
            session.events.put_nowait(None)

        await queue.consume(on_join, no_ack=True)

    async def _seed_tokens(self, connection: AbstractConnection, topic: Topic) -> None:
        """Put one token per partition in the group's lease queue, once in the group's life.

        An exclusive queue serves as a lock between members starting together; a
        marker queue records that seeding finished (a seeder that died half-way is
        redone from scratch, which is safe: nobody consumes tokens before the marker).
        """
        name = lease_queue(self.group, topic.name)
        channel = await connection.channel(publisher_confirms=True)
        try:
            while True:
                try:
                    lock = await channel.declare_queue(f"{name}.lock", exclusive=True, auto_delete=True)
                    break
                except ChannelLockedResource:
                    await asyncio.sleep(0.05)
                    channel = await connection.channel(publisher_confirms=True)
            try:
                if await _queue_exists(connection, f"{name}.seeded"):
                    return
                tokens = await channel.declare_queue(name, durable=True)
                await tokens.purge()
                for partition in range(topic.partitions):
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"%d" % partition, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=name,
                    )
                await channel.declare_queue(f"{name}.seeded", durable=True)
            finally:
                await lock.delete(if_unused=False, if_empty=False)
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()

    async def _run(self, session: _Session) -> None:
        """Manage leases until stopped; after a connection loss, rejoin with backoff."""
        delay = 0.5
        while True:
            try:
                await self._manage(session)
            except BROKER_ERRORS as exc:
                log.warning("group %s lost its RabbitMQ session: %r", self.group, exc)
            except Exception:  # a bug must not leave the member silently deaf: log it and rejoin
                log.exception("group %s: lease manager failed", self.group)
            finally:
                await self._leave(session)
            while True:
                if self._stopping:  # checked, not only cancelled: aiormq may swallow a cancellation
                    return
                await asyncio.sleep(delay)
                try:
                    session = await self._join()
                    delay = 0.5
                    break
                except ServiceUnavailable as exc:
                    log.warning("group %s cannot rejoin yet: %s", self.group, exc)
                    delay = min(delay * 2, 10.0)

    async def _manage(self, session: _Session) -> None:
        while not session.lost.is_set() and not self._stopping:
            event = None
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (stop would hang).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REBALANCE_INTERVAL):
                    event = await session.events.get()
            async with self._lock:
                if event is not None:
                    await self._offer(session, *event)
                for topic in self._topics.values():
                    await self._rebalance(session, topic)

    async def _leave(self, session: _Session) -> None:
        """Drop every lease and close the connection: the broker requeues tokens and unacked deliveries."""
        self._session = None
        for lease in list(self._leases.values()):
            lease.closed = True
        self._leases.clear()
        self._buffer.clear()
        with contextlib.suppress(*BROKER_ERRORS):
            await session.connection.close()

    async def _fair_share(self, session: _Session, topic: Topic) -> int:
        queue = await session.control.declare_queue(lease_queue(self.group, topic.name), passive=True)
        members = max(1, queue.declaration_result.consumer_count or 0)
        return math.ceil(topic.partitions / members)

    def _held(self, topic: str) -> list[_Lease]:
        return [lease for (name, _), lease in sorted(self._leases.items()) if name == topic]

    async def _offer(self, session: _Session, topic_name: str, token: AbstractIncomingMessage) -> None:
        """A token arrived: take the partition if under the fair share, else hand the token back."""
        topic = self._topics[topic_name]
        partition = int(token.body)
        if len(self._held(topic_name)) >= await self._fair_share(session, topic):
            await asyncio.sleep(0.05)  # the broker may offer it right back: do not spin
            await token.reject(requeue=True)
            return
        self._leases[(topic_name, partition)] = await self._open_lease(session, topic, partition, token)

    async def _open_lease(
        self,
        session: _Session,
        topic: Topic,
        partition: int,
        token: AbstractIncomingMessage,
        start: int | None = None,
    ) -> _Lease:
        channel = await session.connection.channel()
        await channel.set_qos(prefetch_count=self._bus.prefetch)
        queue = await channel.declare_queue(
            partition_queue(topic.name, partition), durable=True, arguments=partition_queue_arguments(topic)
        )
        offsets = None
        arguments: dict[str, Any] = {}
        if topic.replayable:
            offsets = await session.offsets.declare_queue(
                offset_queue(self.group, topic.name, partition),
                durable=True,
                arguments=OFFSET_QUEUE_ARGUMENTS,
            )
            if start is None:
                start = await read_offset(offsets) or 0  # a new group reads from the beginning
            arguments[STREAM_OFFSET] = start
        position = start or 0
        lease = _Lease(
            topic, partition, token, channel, committed=position, fetched=position, offsets=offsets
        )
        # A reader closed by the broker (queue deleted, ...) leaves the member in doubt: rejoin.
        channel.close_callbacks.add(lambda *_: None if lease.closed else session.lost.set())

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            if lease.closed:
                return
            if topic.replayable and stream_offset(message) < position:
                await message.ack()  # the broker starts at the chunk holding ``position``
                return
            self._buffer.append((lease, message))
            self._arrived.set()

        await queue.consume(on_delivery, arguments=arguments)
        return lease

    async def _close_lease(self, lease: _Lease, *, give_back: bool) -> None:
        lease.closed = True
        if self._leases.get((lease.topic.name, lease.partition)) is lease:
            del self._leases[(lease.topic.name, lease.partition)]
        with contextlib.suppress(*BROKER_ERRORS):
            await lease.channel.close()  # stop reading before anyone else can start
            if give_back:
                await lease.token.reject(requeue=True)

    async def _rebalance(self, session: _Session, topic: Topic) -> None:
        """Give back partitions above the fair share, committed ones first."""
        held = self._held(topic.name)
        if not held:
            return
        excess = len(held) - await self._fair_share(session, topic)
        if excess <= 0:
            for lease in held:
                lease.over_share_since = None
            return
        now = time.monotonic()
        candidates = sorted(held, key=lambda lease: (not lease.clean, -lease.partition))[:excess]
        for lease in candidates:
            lease.over_share_since = lease.over_share_since or now
            if lease.clean or now - lease.over_share_since > RELEASE_GRACE:
                await self._close_lease(lease, give_back=True)

    # -- consuming ----------------------------------------------------------------------------

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._task is None:
            raise RuntimeError("subscriber is not started: call start() first")
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            deliveries = await self._take(max_messages)
            remaining = deadline - asyncio.get_running_loop().time()
            if deliveries or remaining <= 0:
                return deliveries
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
                    # Deliveries come one callback at a time: let the rest of the burst land, so a
                    # batch published together is usually fetched together (like Kafka's fetch.max.wait).
                    await asyncio.sleep(FETCH_LINGER)

    async def _take(self, max_messages: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        credit: dict[_Lease, AbstractIncomingMessage] = {}
        while self._buffer and len(deliveries) < max_messages:
            lease, message = self._buffer.popleft()
            if lease.closed:
                continue
            deliveries.append(self._delivery(lease, message))
            if lease.topic.replayable:
                credit[lease] = message
        # On a stream an ack only returns credit (the offset store is the position): send it now.
        for lease, message in credit.items():
            if not lease.closed:
                with contextlib.suppress(*BROKER_ERRORS):
                    await message.ack(multiple=True)
        return deliveries

    def _delivery(self, lease: _Lease, message: AbstractIncomingMessage) -> Delivery:
        if lease.topic.replayable:
            offset = stream_offset(message)
        else:
            offset, lease.sequence = lease.sequence, lease.sequence + 1
        lease.fetched = offset + 1
        return Delivery(
            message=to_message(lease.topic.name, message),
            partition=lease.partition,
            offset=offset,
            timestamp=published_at(message),
            redelivered=bool(message.redelivered),
            token=_Token(lease, message),
        )

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        latest: dict[_Lease, Delivery] = {}
        for delivery in deliveries:
            token = delivery.token
            if not isinstance(token, _Token) or token.lease.closed:
                continue  # the partition moved on (rewind or rebalance): it will be delivered again
            known = latest.get(token.lease)
            if known is None or delivery.offset > known.offset:
                latest[token.lease] = delivery
        try:
            await asyncio.gather(*(self._commit_lease(lease, delivery) for lease, delivery in latest.items()))
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(f"cannot commit to RabbitMQ: {exc!r}") from exc

    async def _commit_lease(self, lease: _Lease, delivery: Delivery) -> None:
        position = delivery.offset + 1
        if position <= lease.committed:
            return
        if lease.offsets is None:
            assert isinstance(delivery.token, _Token)
            await delivery.token.message.ack(multiple=True)
        else:
            await lease.offsets.channel.default_exchange.publish(
                aio_pika.Message(b"%d" % position, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=lease.offsets.name,
                timeout=self._bus.publish_timeout,
            )
        lease.committed = max(lease.committed, position)

    async def rewind(self, to: ReplayPoint) -> None:
        """Move the group to ``to`` on every partition of the subscribed (stream) topics.

        Meant for a group whose other members are stopped (as with Kafka's offset
        reset): a running member holding a partition would overwrite its position.
        """
        fixed = [t.name for t in self._topics.values() if not t.replayable]
        if fixed:
            raise PermanentError(f"topics {fixed} are queues, not streams: they cannot be rewound")
        session = self._session
        if session is None:
            raise ServiceUnavailable("not connected to RabbitMQ: cannot rewind now")
        channel = await self._bus._open_channel()
        try:
            places = [(t, p) for t in self._topics.values() for p in range(t.partitions)]
            # Finding a timestamp's offset reads the stream: do every partition at once.
            targets = await asyncio.gather(*(self._target(channel, t, p, to) for t, p in places))
            async with self._lock:
                for (topic, partition), target in zip(places, targets, strict=True):
                    await self._rewind_partition(session, channel, topic, partition, target)
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(f"cannot rewind on RabbitMQ: {exc!r}") from exc
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()

    async def _target(self, channel: AbstractChannel, topic: Topic, partition: int, to: ReplayPoint) -> int:
        if to.offset is not None:
            return to.offset
        assert to.timestamp is not None  # a ReplayPoint is one or the other
        return await self._bus.offset_at(channel, topic.name, partition, to.timestamp)

    async def _rewind_partition(
        self, session: _Session, channel: AbstractChannel, topic: Topic, partition: int, target: int
    ) -> None:
        offsets = await channel.declare_queue(
            offset_queue(self.group, topic.name, partition), durable=True, arguments=OFFSET_QUEUE_ARGUMENTS
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"%d" % target, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=offsets.name,
        )
        lease = self._leases.get((topic.name, partition))
        if lease is not None:
            await self._close_lease(lease, give_back=False)
            self._leases[(topic.name, partition)] = await self._open_lease(
                session, topic, partition, lease.token, start=target
            )


async def _queue_exists(connection: AbstractConnection, name: str) -> bool:
    """Whether a queue exists (a passive declare of a missing queue closes its channel: use a spare one)."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(*BROKER_ERRORS):
            await channel.close()
