"""The Apache Kafka backend of the bus port, on confluent-kafka (librdkafka).

Threads: librdkafka calls block, so none of them runs on the event loop. Each
client owns one single-thread executor and every call on that client goes
through it (a confluent ``Consumer`` must never be used from two threads at
once). The producer also has a poll thread that serves delivery reports and
resolves each published batch's future on the loop.

Consumer groups use the classic protocol with the ``roundrobin`` assignor,
which spreads EACH topic's partitions over the members. The incremental
assignors (``cooperative-sticky``, and the KIP-848 ``uniform`` one) balance
only partition counts: a member joining a group that reads a busy and a quiet
topic was handed every partition of the quiet one, so one instance did all
the work (measured: billing 654/0 events on two instances; a contract test
pins it). The price is an eager rebalance: every member gives back its
partitions for the moment of a join or leave. Between fetches a keep-alive
poll serves rebalance callbacks, so one member busy with a batch does not
stall the group's rebalance.

Rebalances and commits: when partitions are revoked, the deliveries buffered
for them are dropped, and ``commit`` only commits partitions this member still
owns. A delivery handed out just before a revoke may therefore be handled here
and again by the new owner; the inbox (idempotent consumers) makes that
harmless, and no offset is ever committed by a member that no longer owns it.

Topics created by :meth:`KafkaBus.ensure_topics` use ``LogAppendTime``, so a
delivery's timestamp and rewinding to a time both follow the broker's clock.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic

from strowger.bus.port import Bus, Delivery, LagSample, ReplayPoint, Subscriber
from strowger.errors import ConfigError, PermanentError, ServiceUnavailable, StrowgerError
from strowger.events.envelope import Message
from strowger.events.topics import Topic
from strowger.settings import BusKind, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_SLICE: Final = 0.1  # longest single blocking poll, so commits and stops never wait long
KEEPALIVE_INTERVAL: Final = 0.1  # how often an idle member serves rebalance callbacks
UNCOMMITTED: Final = -1001  # librdkafka's OFFSET_INVALID: the group has no committed offset

# Errors that say "try again later" even when librdkafka does not flag them retriable.
_TRANSIENT_CODES: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._QUEUE_FULL,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # metadata of a just-created topic has not propagated
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)
# Commit errors meaning this member is no longer the partitions' owner: the new
# owner will read them again from the last committed offset.
_OWNERSHIP_LOST: Final = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


class BrokerRejected(PermanentError):
    """Kafka refused a request for a reason retrying cannot fix (too large, not authorised...)."""


def as_strowger_error(error: KafkaError, doing: str) -> StrowgerError:
    """``error`` as ServiceUnavailable (worth retrying) or BrokerRejected (never will succeed)."""
    text = f"Kafka: {doing} failed: {error.name()}: {error.str()}"
    if not error.fatal() and (error.retriable() or error.code() in _TRANSIENT_CODES):
        return ServiceUnavailable(text)
    return BrokerRejected(text)


def _from_exception(exc: KafkaException, doing: str) -> StrowgerError:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return as_strowger_error(error, doing)
    return ServiceUnavailable(f"Kafka: {doing} failed: {exc}")


_KAFKA_URL_FORM = "kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT][?librdkafka.setting=value&…]"


def bootstrap_servers(url: str) -> str:
    """``host:port[,host:port]`` from ``kafka://[user:password@]host:port[,host:port][?…]``."""
    scheme, _, rest = url.partition("://")
    servers = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    if scheme != "kafka" or not servers:
        raise ConfigError("STROWGER_BUS_URL", _KAFKA_URL_FORM, redact_url(url))
    return servers


def client_config(url: str) -> dict[str, object]:
    """The librdkafka settings a bus URL carries: servers, credentials, TLS.

    Query parameters are librdkafka settings passed through as written
    (``security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512&ssl.ca.location=/etc/kafka/ca.pem``),
    so TLS and SASL need no setting of their own. A user and password in the URL become
    ``sasl.username``/``sasl.password`` and, unless the query says otherwise, SASL over TLS
    with SCRAM-SHA-512: credentials are never sent in clear by default.
    """
    config: dict[str, object] = {"bootstrap.servers": bootstrap_servers(url)}
    parts = urlsplit(url)
    if parts.username is not None:
        config |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": unquote(parts.username),
            "sasl.password": unquote(parts.password or ""),
        }
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not key or ("." not in key and key not in _PLAIN_KEYS):
            raise ConfigError("STROWGER_BUS_URL", _KAFKA_URL_FORM, redact_url(url))
        config[key] = value
    return config


# librdkafka settings without a dot in their name that a URL may carry.
_PLAIN_KEYS = frozenset({"acks", "debug"})


def _new_executor(name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


def _to_delivery(record: KafkaMessage) -> Delivery:
    kind, millis = record.timestamp()
    appended = (
        datetime.now(UTC) if kind == TIMESTAMP_NOT_AVAILABLE else datetime.fromtimestamp(millis / 1000, UTC)
    )
    key = record.key()
    raw = record.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {
        name: (value.decode(errors="replace") if isinstance(value, bytes) else value or "")
        for name, value in pairs
    }
    return Delivery(
        message=Message(
            topic=record.topic() or "",
            key=key.decode(errors="replace") if key else "",
            headers=headers,
            value=record.value() or b"",
        ),
        partition=record.partition() or 0,
        offset=record.offset() or 0,
        timestamp=appended,
    )


def next_offsets(deliveries: Sequence[Delivery]) -> list[TopicPartition]:
    """Per partition, the offset after the highest delivery: what a commit of ``deliveries`` stores."""
    highest: dict[tuple[str, int], int] = {}
    for delivery in deliveries:
        where = (delivery.message.topic, delivery.partition)
        highest[where] = max(highest.get(where, -1), delivery.offset)
    return [
        TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in sorted(highest.items())
    ]


def _consume_outcome(future: asyncio.Future[None]) -> None:
    """Mark a late delivery report's outcome as seen: the publisher already raised for it."""
    if not future.cancelled():
        future.exception()


class _PendingBatch:
    """The delivery reports of one published batch, resolving one future on the loop.

    Reports arrive on the producer's poll thread; the future is touched only on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = size
        self.failure: KafkaError | None = None
        self.lock = threading.Lock()

    def report(self, error: KafkaError | None, _record: KafkaMessage) -> None:
        with self.lock:
            self.pending -= 1
            if error is not None and self.failure is None:
                self.failure = error
                self.loop.call_soon_threadsafe(self._settle)
            elif self.pending == 0 and self.failure is None:
                self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future.done():
            return
        if self.failure is not None:
            self.future.set_exception(as_strowger_error(self.failure, "publish"))
        else:
            self.future.set_result(None)


class KafkaSubscriber(Subscriber):
    """A consumer-group member; see the module docstring for threads and rebalances."""

    def __init__(
        self,
        config: Mapping[str, object],
        group: str,
        topics: Sequence[str],
        *,
        join_timeout: float,
        buffer_limit: int = 5000,
    ) -> None:
        self.group = group
        self.topics = tuple(topics)
        self._config = {**config, "group.id": group}
        self._join_timeout = join_timeout
        self._buffer_limit = buffer_limit
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._buffer_lock = threading.Lock()
        self._joined = threading.Event()
        self._consumer: Consumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Future[None] | None = None  # a background poll refilling the buffer
        self._busy = 0
        self._last_call = 0.0
        self._fatal: KafkaError | None = None

    # -- the port ----------------------------------------------------------

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = _new_executor(f"kafka-{self.group}")
        await self._call(self._open)
        try:
            await self._await_first_assignment()
        except BaseException:
            await self.stop()
            raise
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"kafka-keepalive-{self.group}")

    async def stop(self) -> None:
        if self._executor is None:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
            self._keepalive = None
        if self._prefetch is not None:  # let it finish on the thread before the consumer closes
            prefetch, self._prefetch = self._prefetch, None
            await asyncio.gather(prefetch, return_exceptions=True)
        try:
            await self._call(self._close)
        finally:
            self._executor.shutdown(wait=False)
            self._executor = None
            with self._buffer_lock:
                self._buffer.clear()  # never committed: the group delivers them again

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._fatal is not None:
                raise as_strowger_error(self._fatal, "consume")
            if self._prefetch is not None and self._prefetch.done():
                prefetch, self._prefetch = self._prefetch, None
                prefetch.result()  # a failed background poll fails this fetch, as its own poll would
            batch = self._take(max_messages)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                if batch:
                    self._prefetch_beyond(max_messages)
                return batch
            if self._prefetch is not None:
                await asyncio.wait({self._prefetch}, timeout=remaining)
            else:
                await self._call(self._poll, min(remaining, POLL_SLICE))

    def _prefetch_beyond(self, max_messages: int) -> None:
        """Refill the buffer on the consumer's thread while the caller handles the batch just taken.

        Turning librdkafka's records into deliveries costs a few microseconds each; done here,
        it overlaps the handler's database round trips instead of following them. What the
        poll finds is in the buffer for the next fetch; its error, if any, is raised there.
        """
        if self._prefetch is None and len(self._buffer) < 2 * max_messages and self._executor is not None:
            self._prefetch = asyncio.ensure_future(self._call(self._poll, 0))

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self._call(self._commit, next_offsets(deliveries))

    async def rewind(self, to: ReplayPoint) -> None:
        await self._call(self._rewind, to)

    # -- on the event loop -------------------------------------------------

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise ServiceUnavailable(f"Kafka subscriber {self.group} is not started")
        self._busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._busy -= 1
            self._last_call = time.monotonic()

    async def _await_first_assignment(self) -> None:
        deadline = time.monotonic() + self._join_timeout
        while not self._joined.is_set():
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Kafka: group {self.group} gave no assignment in {self._join_timeout}s"
                )
            await self._call(self._poll, POLL_SLICE)

    async def _keep_alive(self) -> None:
        """Poll now and then while the application is busy, so rebalances never wait for it."""
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            idle = time.monotonic() - self._last_call >= KEEPALIVE_INTERVAL
            if not self._busy and idle:
                try:
                    await self._call(self._poll, 0)
                except Exception:  # the next fetch reports it; keep the member alive
                    log.exception("Kafka keep-alive poll failed for group %s", self.group)

    def _take(self, limit: int) -> list[Delivery]:
        with self._buffer_lock:
            count = min(limit, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    # -- on the consumer's thread ------------------------------------------

    def _open(self) -> None:
        consumer = Consumer(self._config)
        consumer.subscribe(
            list(self.topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        self._consumer = consumer

    def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()  # leaves the group at once: its partitions go to the other members

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.debug("group %s assigned %s", self.group, partitions)
        self._joined.set()

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.debug("group %s revoked %s", self.group, partitions)
        self._drop_buffered({(tp.topic, tp.partition) for tp in partitions})

    def _drop_buffered(self, partitions: set[tuple[str, int]]) -> None:
        with self._buffer_lock:
            kept = [d for d in self._buffer if (d.message.topic, d.partition) not in partitions]
            self._buffer.clear()
            self._buffer.extend(kept)

    def _poll(self, timeout: float) -> None:
        """Serve callbacks and buffer what arrives within ``timeout`` (nothing if the buffer is full)."""
        consumer = self._require_consumer()
        room = self._buffer_limit - len(self._buffer)
        if room <= 0:
            return
        try:
            first = consumer.poll(timeout)  # returns as soon as one message is there
            records = [first] if first is not None else []
            if first is not None and room > 1:
                records.extend(consumer.consume(room - 1, 0))
        except KafkaException as exc:
            raise _from_exception(exc, "consume") from exc
        deliveries = [_to_delivery(r) for r in records if not self._is_error(r)]
        with self._buffer_lock:
            self._buffer.extend(deliveries)

    def _is_error(self, record: KafkaMessage) -> bool:
        error = record.error()
        if error is None:
            return False
        if error.fatal():
            self._fatal = error
        log.warning("Kafka consumer in group %s: %s", self.group, error)
        return True

    def _commit(self, offsets: list[TopicPartition], attempts: int = 20) -> None:
        consumer = self._require_consumer()
        for _ in range(attempts):
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            mine = [tp for tp in offsets if (tp.topic, tp.partition) in owned]
            if len(mine) < len(offsets):
                log.info("group %s: not committing partitions it no longer owns", self.group)
            if not mine:
                return
            error = self._try_commit(consumer, mine)
            if error is None:
                return
            if error.code() in _OWNERSHIP_LOST:
                log.info("group %s: commit refused, ownership lost (%s)", self.group, error.name())
                return
            if error.code() != KafkaError.REBALANCE_IN_PROGRESS:
                raise as_strowger_error(error, "commit")
            self._poll(POLL_SLICE)  # let the rebalance finish, then commit what is still ours
        raise ServiceUnavailable(f"Kafka: group {self.group} kept rebalancing; commit not done")

    @staticmethod
    def _try_commit(consumer: Consumer, offsets: list[TopicPartition]) -> KafkaError | None:
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError):
                return error
            raise ServiceUnavailable(f"Kafka: commit failed: {exc}") from exc
        return next((tp.error for tp in results if tp.error is not None), None)

    def _rewind(self, to: ReplayPoint) -> None:
        consumer = self._require_consumer()
        try:
            targets = self._rewind_targets(consumer, to)
            consumer.commit(offsets=targets, asynchronous=False)
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            for target in targets:
                if (target.topic, target.partition) in owned:
                    consumer.seek(target)
        except KafkaException as exc:
            raise _from_exception(exc, "rewind") from exc
        self._drop_buffered({(tp.topic, tp.partition) for tp in targets})

    def _rewind_targets(self, consumer: Consumer, to: ReplayPoint) -> list[TopicPartition]:
        """The offset to restart from on every partition, kept inside what the log still holds."""
        partitions = [
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ]
        bounds = [consumer.get_watermark_offsets(tp, timeout=10) for tp in partitions]
        if to.timestamp is not None:
            millis = int(to.timestamp.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, millis) for tp in partitions], 10
            )
            wanted = [
                tp.offset if tp.offset >= 0 else high for tp, (_, high) in zip(found, bounds, strict=True)
            ]
        else:
            wanted = [to.offset or 0] * len(partitions)
        return [
            TopicPartition(tp.topic, tp.partition, min(max(offset, low), high))
            for tp, offset, (low, high) in zip(partitions, wanted, bounds, strict=True)
        ]

    def _require_consumer(self) -> Consumer:
        if self._consumer is None:
            raise ServiceUnavailable(f"Kafka subscriber {self.group} is closed")
        return self._consumer


class KafkaBus(Bus):
    """The bus on Apache Kafka: ``KafkaBus("kafka://host:9092[,host:9092]")``.

    Options: ``publish_timeout`` (seconds a publish may wait for acks),
    ``replication_factor`` for new topics, ``assignment_strategy`` and
    ``session_timeout_ms`` for consumer groups, ``join_timeout`` for a member's
    first assignment, ``connect_timeout`` for :meth:`start`, ``client_id``, and
    ``config``: extra librdkafka properties applied to every client (security...).
    """

    kind: BusKind = "kafka"

    def __init__(
        self,
        url: str,
        *,
        publish_timeout: float = 15.0,
        replication_factor: int = 1,
        assignment_strategy: str = "roundrobin",
        session_timeout_ms: int = 6000,
        join_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        client_id: str = "strowger",
        config: Mapping[str, object] | None = None,
    ) -> None:
        common: dict[str, object] = {**client_config(url), "client.id": client_id}
        common.update(config or {})
        self._common = common
        self.publish_timeout = publish_timeout
        self.replication_factor = replication_factor
        self.join_timeout = join_timeout
        self.connect_timeout = connect_timeout
        self._producer_config = {
            **common,
            "enable.idempotence": True,
            "acks": "all",
            # 1 ms: a relay waking on one commit sends at once (commit→published latency), while a
            # burst still fills batches (the relay hands librdkafka hundreds of messages at a time).
            "linger.ms": 1,
            "message.timeout.ms": int(publish_timeout * 1000),  # librdkafka reports failure by then
            "logger": log,
        }
        self._consumer_config = {
            **common,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": assignment_strategy,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 6),
            # An idle long-poll fetch is answered after this; a seek or rewind waits for it, so
            # 100 ms (not 500) keeps replays and first deliveries prompt for a few idle requests.
            "fetch.wait.max.ms": 100,
            "logger": log,
        }
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._poller: threading.Thread | None = None
        self._polling = threading.Event()

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = _new_executor("kafka-producer")
        self._admin = AdminClient({str(k): v for k, v in self._common.items()})  # type: ignore[misc]
        self._producer = Producer(self._producer_config)
        try:
            # fail fast if the broker is not there
            await self._in_thread(self._producer.list_topics, None, self.connect_timeout)
        except (KafkaException, ServiceUnavailable) as exc:
            await self.stop()
            raise ServiceUnavailable(
                f"Kafka at {self._common['bootstrap.servers']} is not reachable: {exc}"
            ) from exc
        self._polling.set()
        self._poller = threading.Thread(
            target=self._serve_delivery_reports, name="kafka-delivery", daemon=True
        )
        self._poller.start()

    async def stop(self) -> None:
        if self._executor is None:
            return
        self._polling.clear()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
            self._poller = None
        if self._producer is not None:
            left = await self._in_thread(self._producer.flush, self.publish_timeout)
            if left:
                log.warning("Kafka: %d published messages unconfirmed at stop", left)
        self._executor.shutdown(wait=False)
        self._executor = None
        self._producer = None
        self._admin = None

    async def ensure_topics(self, topics: Sequence[Topic]) -> None:
        admin = self._require(self._admin)
        wanted = [
            NewTopic(
                topic.name,
                num_partitions=topic.partitions,
                replication_factor=self.replication_factor,
                config={"message.timestamp.type": "LogAppendTime"},
            )
            for topic in topics
        ]
        if not wanted:
            return
        for name, future in admin.create_topics(wanted, operation_timeout=30).items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise _from_exception(exc, f"create topic {name}") from exc
        await self._await_metadata([topic.name for topic in topics])

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        producer = self._require(self._producer)
        batch = _PendingBatch(asyncio.get_running_loop(), len(messages))
        await self._in_thread(self._produce_all, producer, messages, batch)
        try:
            # not wait_for: on 3.11 it drops a cancel that arrives with the confirmations
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.shield(batch.future)
        except TimeoutError as exc:
            raise ServiceUnavailable(
                f"Kafka did not confirm {batch.pending} of {len(messages)} messages"
                f" within {self.publish_timeout}s"
            ) from exc
        finally:
            # Given up on (timeout, cancel): librdkafka still reports these messages later, and a
            # failure nobody awaits would be logged as "Future exception was never retrieved".
            if not batch.future.done():
                batch.future.add_done_callback(_consume_outcome)

    def subscriber(self, group: str, topics: Sequence[str]) -> Subscriber:
        return KafkaSubscriber(self._consumer_config, group, topics, join_timeout=self.join_timeout)

    async def lag(self, group: str, topics: Sequence[str]) -> list[LagSample]:
        admin = self._require(self._admin)
        partitions = await self._partitions(topics)
        if not partitions:
            return []
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        offsets = await asyncio.wrap_future(admin.list_consumer_group_offsets(request)[group])
        committed = {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}
        low = await self._log_offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        high = await self._log_offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        return [
            LagSample(
                topic=tp.topic,
                partition=tp.partition,
                group=group,
                committed=max(committed.get(key, UNCOMMITTED), low[key]),  # none yet: reads from the start
                end=high[key],
            )
            for tp in partitions
            for key in [(tp.topic, tp.partition)]
        ]

    # -- helpers -----------------------------------------------------------

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        executor = self._require(self._executor)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, work, *args)
        except KafkaException as exc:
            raise _from_exception(exc, getattr(work, "__name__", "call")) from exc

    @staticmethod
    def _require(client: T | None) -> T:
        if client is None:
            raise ServiceUnavailable("Kafka bus is not started")
        return client

    def _produce_all(self, producer: Producer, messages: Sequence[Message], batch: _PendingBatch) -> None:
        for message in messages:
            # librdkafka encodes str keys and header values as UTF-8 itself: no copy per header here.
            headers: list[tuple[str, str | bytes | None]] = list(message.headers.items())
            while True:
                try:
                    producer.produce(
                        message.topic,
                        message.value,
                        message.key,
                        headers=headers,
                        on_delivery=batch.report,
                    )
                    break
                except BufferError:
                    time.sleep(0.005)  # local queue full: the poll thread is draining it

    def _serve_delivery_reports(self) -> None:
        producer = self._require(self._producer)
        while self._polling.is_set():
            producer.poll(POLL_SLICE)

    async def _await_metadata(self, names: Sequence[str], timeout: float = 30.0) -> None:
        admin = self._require(self._admin)
        deadline = time.monotonic() + timeout
        while True:
            metadata = await self._in_thread(admin.list_topics, None, 10)
            missing = [n for n in names if n not in metadata.topics or metadata.topics[n].error is not None]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"Kafka: topics {missing} did not appear within {timeout}s")
            await asyncio.sleep(0.1)

    async def _partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        admin = self._require(self._admin)
        metadata = await self._in_thread(admin.list_topics, None, 10)
        return [
            TopicPartition(topic, partition)
            for topic in topics
            if topic in metadata.topics
            for partition in sorted(metadata.topics[topic].partitions)
        ]

    async def _log_offsets(
        self, partitions: list[TopicPartition], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        admin = self._require(self._admin)
        futures = admin.list_offsets({tp: spec for tp in partitions})
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures.values()))
        return {(tp.topic, tp.partition): r.offset for tp, r in zip(futures, results, strict=True)}
