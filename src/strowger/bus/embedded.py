"""The embedded bus: a durable, partitioned log kept in the platform's own database.

It gives a single-node platform the same semantics as Kafka without a broker:

* ``bus_log`` holds every message with its topic, partition and per-partition
  offset; ``bus_partitions`` holds each partition's next offset (its end);
  ``bus_offsets`` holds each group's committed position per partition;
  ``bus_topics`` remembers partition counts across restarts.
* Because the log lives in the same database as the outbox, the outbox relay
  appends and marks rows published in ONE transaction (:meth:`EmbeddedBus.append`).
* Members of a group in this process share its partitions (reassigned when a
  member starts or stops). A member starts each partition at the group's
  committed position, so what was fetched but not committed is delivered again.
* ``fetch`` sleeps on an in-process signal set after an append commits: no
  busy polling. (Appends from another process are seen at the next fetch.)
* A group that has never committed reads from the beginning of the log.
* Retention (:meth:`EmbeddedBus.purge`, run by the outbox relay with the outbox's retention,
  ``STROWGER_RETENTION_DAYS``): rows older than the replay window are deleted, except those a
  group that has committed on their partition has not read yet; offsets never restart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from strowger.bus.partitioning import partition_for
from strowger.bus.port import Bus, Delivery, LagSample, ReplayPoint, Subscriber
from strowger.events.envelope import Message
from strowger.events.topics import Topic, topic_named
from strowger.settings import BusKind
from strowger.store.db import Database, Row, TableSet, Transaction

LOG_TABLES = TableSet(
    name="embedded-bus",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS bus_topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS bus_log (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
            key TEXT NOT NULL, headers TEXT NOT NULL, value BLOB NOT NULL, appended_at REAL NOT NULL,
            UNIQUE (topic, partition, "offset"))""",
        "CREATE INDEX IF NOT EXISTS bus_log_time ON bus_log (topic, appended_at)",
        """CREATE TABLE IF NOT EXISTS bus_partitions (
            topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE IF NOT EXISTS bus_offsets (
            grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
            next_offset INTEGER NOT NULL, PRIMARY KEY (grp, topic, partition))""",
    ],
    postgresql=[
        "CREATE TABLE IF NOT EXISTS bus_topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS bus_log (
            position BIGSERIAL PRIMARY KEY,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" BIGINT NOT NULL,
            key TEXT NOT NULL, headers TEXT NOT NULL, value BYTEA NOT NULL,
            appended_at DOUBLE PRECISION NOT NULL,
            UNIQUE (topic, partition, "offset"))""",
        "CREATE INDEX IF NOT EXISTS bus_log_time ON bus_log (topic, appended_at)",
        """CREATE TABLE IF NOT EXISTS bus_partitions (
            topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset BIGINT NOT NULL,
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE IF NOT EXISTS bus_offsets (
            grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL, PRIMARY KEY (grp, topic, partition))""",
    ],
)

TopicPartition = tuple[str, int]

log = logging.getLogger("strowger.bus.embedded")

# Old rows below every committed group's position on their partition (a partition no group
# has committed on holds nothing back); bus_log_time (topic, appended_at) finds them.
_PURGE = (
    'DELETE FROM bus_log WHERE topic = ? AND appended_at < ? AND "offset" < COALESCE('
    "(SELECT MIN(o.next_offset) FROM bus_offsets o "
    "WHERE o.topic = bus_log.topic AND o.partition = bus_log.partition), "
    '"offset" + 1)'
)


class EmbeddedBus(Bus):
    """The Bus port over a log table in ``database`` (``embedded://``)."""

    kind: BusKind = "embedded"

    def __init__(self, url: str = "embedded://", *, database: Database) -> None:
        self.url = url
        self.database = database
        self._partitions: dict[str, int] = {}
        self._members: dict[str, list[EmbeddedSubscriber]] = {}
        self._generation: dict[str, int] = {}  # per group: bumped on every rebalance or rewind
        self._rewound: dict[str, int] = {}  # per group: the generation its last rewind created
        self._appended = asyncio.Event()
        self._member_ids = itertools.count()
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        await self.database.open()
        await self.database.create_tables(LOG_TABLES)
        for topic, partitions in await self.database.fetchall("SELECT topic, partitions FROM bus_topics"):
            self._partitions[topic] = int(partitions)
        self._started = True

    async def stop(self) -> None:
        for members in list(self._members.values()):
            for member in list(members):
                await member.stop()
        self._started = False

    async def ensure_topics(self, topics: Sequence[Topic]) -> None:
        await self.start()
        async with self.database.transaction() as tx:
            for topic in topics:
                await tx.execute(
                    "INSERT INTO bus_topics (topic, partitions) VALUES (?, ?) ON CONFLICT (topic) DO NOTHING",
                    (topic.name, topic.partitions),
                )
                row = await tx.fetchone("SELECT partitions FROM bus_topics WHERE topic = ?", (topic.name,))
                assert row is not None
                self._partitions[topic.name] = int(row[0])

    def partitions_of(self, topic: str) -> int:
        """The topic's partition count (ensured, else the catalogue's)."""
        return self._partitions.get(topic) or topic_named(topic).partitions

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        async with self.database.transaction() as tx:
            await self.append(tx, messages)

    async def append(self, tx: Transaction, messages: Sequence[Message]) -> None:
        """Append ``messages`` inside the caller's transaction; durable (and visible) when it commits."""
        now = datetime.now(UTC).timestamp()
        rows: list[tuple[object, ...]] = []
        # Partitions in a fixed order: concurrent appenders (relays on PostgreSQL) lock their
        # bus_partitions rows in the same order, so they queue instead of deadlocking.
        for (topic, partition), batch in sorted(_by_partition(messages, self.partitions_of).items()):
            first = await _reserve_offsets(tx, topic, partition, len(batch))
            for offset, message in enumerate(batch, start=first):
                headers = orjson.dumps(dict(message.headers)).decode()
                rows.append((topic, partition, offset, message.key, headers, message.value, now))
        await tx.executemany(
            'INSERT INTO bus_log (topic, partition, "offset", key, headers, value, appended_at) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        tx.on_commit(self._signal_append)

    def _signal_append(self) -> None:
        # Wake every waiting fetch, then arm a fresh event for the next wait.
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    async def purge(self, *, older_than: timedelta) -> int:
        """Delete log rows appended more than ``older_than`` ago (the replay window); returns how many.

        A row a committed group has not read yet is kept however old (a lagging consumer
        never loses an event to retention); a group that stopped for good holds rows back
        until its offsets are deleted. Rewinding to a purged offset starts at the oldest kept.
        """
        await self.start()
        cutoff = datetime.now(UTC).timestamp() - older_than.total_seconds()
        topics = await self.database.fetchall("SELECT DISTINCT topic FROM bus_partitions")
        deleted = held = 0
        for (topic,) in topics:
            async with self.database.transaction() as tx:  # one topic a transaction: short locks
                deleted += await tx.execute(_PURGE, (topic, cutoff))
                row = await tx.fetchone(
                    "SELECT COUNT(*) FROM bus_log WHERE topic = ? AND appended_at < ?", (topic, cutoff)
                )
                held += int(row[0]) if row else 0
        if deleted:
            log.info("purged %d embedded log rows older than %s", deleted, older_than)
        if held:
            log.warning(
                "kept %d embedded log rows older than %s: groups that committed have not read them "
                "(lagging, or retired: delete their bus_offsets rows)",
                held,
                older_than,
            )
        return deleted

    def subscriber(self, group: str, topics: Sequence[str]) -> Subscriber:
        return EmbeddedSubscriber(self, group, tuple(topics), next(self._member_ids))

    async def lag(self, group: str, topics: Sequence[str]) -> list[LagSample]:
        ends = await self._positions("SELECT topic, partition, next_offset FROM bus_partitions", topics)
        committed = await self._positions(
            "SELECT topic, partition, next_offset FROM bus_offsets WHERE grp = ?", topics, (group,)
        )
        return [
            LagSample(
                topic, partition, group, committed.get((topic, partition), 0), ends.get((topic, partition), 0)
            )
            for topic in topics
            for partition in range(self.partitions_of(topic))
        ]

    async def _positions(
        self, sql: str, topics: Sequence[str], params: tuple[str, ...] = ()
    ) -> dict[TopicPartition, int]:
        wanted = set(topics)
        return {(t, int(p)): int(n) for t, p, n in await self.database.fetchall(sql, params) if t in wanted}

    # Group membership (in this process) -------------------------------------------------------

    def _join(self, member: EmbeddedSubscriber) -> None:
        self._members.setdefault(member.group, []).append(member)
        self._bump(member.group)

    def _leave(self, member: EmbeddedSubscriber) -> None:
        members = self._members.get(member.group, [])
        if member in members:
            members.remove(member)
            self._bump(member.group)

    def _bump(self, group: str) -> None:
        self._generation[group] = self._generation.get(group, 0) + 1
        self._signal_append()  # waiting members re-read their assignment at once

    def generation(self, group: str) -> int:
        return self._generation.get(group, 0)

    def _mark_rewound(self, group: str) -> None:
        self._bump(group)  # every member reloads its positions from the group's
        self._rewound[group] = self.generation(group)

    def rewound_at(self, group: str) -> int:
        return self._rewound.get(group, 0)

    def assignment(self, member: EmbeddedSubscriber) -> list[TopicPartition]:
        """Round-robin of each topic's partitions over the group's live members reading that topic."""
        owned: list[TopicPartition] = []
        for topic in member.topics:
            readers = [m for m in self._members.get(member.group, []) if topic in m.topics]
            index = readers.index(member)
            owned.extend((topic, p) for p in range(self.partitions_of(topic)) if p % len(readers) == index)
        return owned

    def arm(self) -> asyncio.Event:
        """The event the next append will set: taken BEFORE reading so no append is missed."""
        return self._appended


@dataclass(frozen=True, slots=True)
class _Token:
    generation: int  # the group generation the delivery was fetched under


class EmbeddedSubscriber(Subscriber):
    """A member of a consumer group on the embedded log."""

    def __init__(self, bus: EmbeddedBus, group: str, topics: tuple[str, ...], member_id: int) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self.member_id = member_id
        self._positions: dict[TopicPartition, int] = {}  # next offset to fetch, per owned partition
        self._generation = -1
        self._started = False
        self._cursor = 0  # which owned partition is read first, rotated for fairness

    async def start(self) -> None:
        if self._started:
            return
        await self.bus.start()
        self._started = True
        self.bus._join(self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self.bus._leave(self)
            self._positions.clear()

    async def _refresh_assignment(self) -> None:
        generation = self.bus.generation(self.group)
        if generation == self._generation:
            return
        owned = self.bus.assignment(self)
        committed = await self._committed()
        self._positions = {tp: committed.get(tp, 0) for tp in owned}
        self._generation = generation

    async def _committed(self) -> dict[TopicPartition, int]:
        rows = await self.bus.database.fetchall(
            "SELECT topic, partition, next_offset FROM bus_offsets WHERE grp = ?", (self.group,)
        )
        return {(t, int(p)): int(n) for t, p, n in rows}

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if not self._started:
            raise RuntimeError("fetch() on a subscriber that is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            appended = self.bus.arm()
            await self._refresh_assignment()
            deliveries = await self._read(max_messages)
            remaining = deadline - loop.time()
            if deliveries or remaining <= 0 or not self._started:
                return deliveries
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it can swallow a cancel (3.11)
                    await appended.wait()
            except TimeoutError:
                return []

    async def _read(self, max_messages: int) -> list[Delivery]:
        owned = list(self._positions)
        if not owned:
            return []
        self._cursor = (self._cursor + 1) % len(owned)
        deliveries: list[Delivery] = []
        token = _Token(self._generation)  # one per fetch: every delivery of it shares the generation
        async with self.bus.database.snapshot() as tx:
            for topic, partition in owned[self._cursor :] + owned[: self._cursor]:
                room = max_messages - len(deliveries)
                if room <= 0:
                    break
                rows = await tx.fetchall(
                    'SELECT "offset", key, headers, value, appended_at FROM bus_log '
                    'WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                    (topic, partition, self._positions[(topic, partition)], room),
                )
                deliveries.extend([_delivery(topic, partition, row, token) for row in rows])
                if rows:
                    self._positions[(topic, partition)] = int(rows[-1][0]) + 1
        return deliveries

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        # Commits never move a position backwards, and deliveries fetched before a rewind
        # are ignored, so a late commit cannot undo a replay.
        latest: dict[TopicPartition, int] = {}
        rewound_at = self.bus.rewound_at(self.group)
        for delivery in deliveries:
            token = delivery.token
            if isinstance(token, _Token) and token.generation < rewound_at:
                continue
            tp = (delivery.message.topic, delivery.partition)
            offset = delivery.offset + 1
            if offset > latest.get(tp, 0):
                latest[tp] = offset
        if not latest:
            return
        async with self.bus.database.transaction() as tx:
            for (topic, partition), next_offset in latest.items():
                await tx.execute(
                    "INSERT INTO bus_offsets (grp, topic, partition, next_offset) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset "
                    "WHERE bus_offsets.next_offset < excluded.next_offset",
                    (self.group, topic, partition, next_offset),
                )

    async def rewind(self, to: ReplayPoint) -> None:
        positions = await self._replay_positions(to)
        async with self.bus.database.transaction() as tx:
            await tx.executemany(
                "INSERT INTO bus_offsets (grp, topic, partition, next_offset) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(self.group, topic, partition, offset) for (topic, partition), offset in positions.items()],
            )
        self.bus._mark_rewound(self.group)

    async def _replay_positions(self, to: ReplayPoint) -> dict[TopicPartition, int]:
        partitions = [(t, p) for t in self.topics for p in range(self.bus.partitions_of(t))]
        if to.offset is not None:
            return dict.fromkeys(partitions, max(0, to.offset))
        assert to.timestamp is not None
        since = to.timestamp.timestamp()
        ends = await self.bus._positions(
            "SELECT topic, partition, next_offset FROM bus_partitions", self.topics
        )
        positions: dict[TopicPartition, int] = {}
        async with self.bus.database.snapshot() as tx:
            for topic, partition in partitions:
                row = await tx.fetchone(
                    'SELECT MIN("offset") FROM bus_log '
                    "WHERE topic = ? AND partition = ? AND appended_at >= ?",
                    (topic, partition, since),
                )
                first = row[0] if row else None
                positions[(topic, partition)] = (
                    int(first) if first is not None else ends.get((topic, partition), 0)
                )
        return positions


def _delivery(topic: str, partition: int, row: Row, token: _Token) -> Delivery:
    offset, key, headers, value, appended_at = row
    message = Message(topic, key, orjson.loads(headers), value if type(value) is bytes else bytes(value))
    return Delivery(message, partition, offset, datetime.fromtimestamp(appended_at, UTC), token=token)


def _by_partition(
    messages: Iterable[Message], partitions_of: Callable[[str], int]
) -> dict[TopicPartition, list[Message]]:
    grouped: dict[TopicPartition, list[Message]] = {}
    for message in messages:
        partition = partition_for(message.key, partitions_of(message.topic))
        grouped.setdefault((message.topic, partition), []).append(message)
    return grouped


async def _reserve_offsets(tx: Transaction, topic: str, partition: int, count: int) -> int:
    """Reserve ``count`` consecutive offsets at the partition's end; returns the first.

    One upsert (one round trip on PostgreSQL): it locks the partition's row, so concurrent
    appenders queue instead of colliding; SQLite has a single writer anyway.
    """
    row = await tx.fetchone(
        "INSERT INTO bus_partitions (topic, partition, next_offset) VALUES (?, ?, ?) "
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = bus_partitions.next_offset + ? "
        "RETURNING next_offset",
        (topic, partition, count, count),
    )
    assert row is not None
    return int(row[0]) - count
