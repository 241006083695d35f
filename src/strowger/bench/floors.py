"""Hand-written floors for `strowger bench bus`: the same durable work, bare clients, no Strowger.

The raw-client peers (:mod:`strowger.bench.raw_kafka`) read and write the broker and do
nothing else. A consumer that must not lose or double-apply an event does more, whatever
framework it uses: it decodes each event, records it as seen and writes its effect in a
database transaction, commits, and only then moves the group's offset. A relay reads
committed outbox rows, produces them, waits for the broker's acknowledgement and marks
them published. These floors do exactly that with confluent-kafka and psycopg / sqlite3,
in a plain synchronous loop on one thread, with the shortest code that keeps the guarantees:

* :func:`kafka_consume_floor` — a new consumer group reads the topic Strowger's pipeline
  just read (the same messages); per batch of up to 500: ``orjson.loads`` of each value,
  the event id from its header, ONE ``INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING
  RETURNING`` into a dedupe table, ONE multi-row insert of the effect rows of the events
  it returned, COMMIT, then a synchronous offset commit.
* :func:`sqlite_log_consume_floor` — the embedded bus's ``bus_log`` rows of the same topic,
  read with ``sqlite3`` 500 at a time per partition; per batch, in ONE transaction:
  ``orjson.loads`` of each value, ``INSERT OR IGNORE`` of the dedupe rows, the effect rows
  of the events not seen before, the group's new offset; COMMIT.
* :func:`kafka_relay_floor` — rows already in the same ``outbox`` table (written by
  :class:`~strowger.store.outbox.Outbox`); per batch of up to 1,000: ``SELECT … FOR UPDATE
  SKIP LOCKED`` in id order, ``produce`` each, ``flush`` (every acknowledgement), ``UPDATE
  … WHERE id = ANY(…)``, COMMIT. One relay, so no partition claims (Strowger's relay
  claims partitions so that several may run at once).

They are not alternatives to Strowger (no retries, no dead letters, no parking, no
schema check, no tracing, no metrics): they show what the machine allows for that work,
so a target above the floor cannot be met by any implementation on this machine.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from strowger.events.envelope import Header

BATCH = 500
RELAY_BATCH = 1000

# The embedded bus's log read and acknowledged with the bare driver (``?`` placeholders): one page
# of a partition in offset order, and a group's next offset on that partition.
LOG_PAGE = (
    'SELECT "offset", key, headers, value FROM bus_log WHERE topic = ? AND partition = ? '
    'AND "offset" >= ? ORDER BY "offset" LIMIT ?'
)
SAVE_OFFSET = (
    "INSERT INTO bus_offsets (grp, topic, partition, next_offset) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)


@dataclass(frozen=True, slots=True)
class FloorFigures:
    """One floor's figures."""

    what: str
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / max(self.seconds, 1e-9)


_DEDUPE = """CREATE TABLE IF NOT EXISTS bench_floor_seen (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (consumer, event_id))"""
_EFFECTS = """CREATE TABLE IF NOT EXISTS bench_floor_effects (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, order_id TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id))"""


def _connect_postgres(url: str, schema: str) -> Any:
    import psycopg

    connection = psycopg.connect(url, autocommit=False)
    connection.execute(f'SET search_path TO "{schema}"')
    connection.execute(_DEDUPE)
    connection.execute(_EFFECTS)
    connection.commit()
    return connection


def _effect(value: bytes) -> tuple[str, str]:
    order = orjson.loads(value)["event"]["productOrder"]
    return str(order["id"]), str(order["state"])


def kafka_consume_floor(servers: str, topic: str, url: str, schema: str, events: int) -> FloorFigures:
    """Consume ``events`` events of ``topic`` with a hand-written at-least-once loop (see the module)."""
    group = f"bench.floor.{uuid.uuid4().hex[:10]}"
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    connection = _connect_postgres(url, schema)
    consumer.subscribe([topic])
    done, started = 0, 0.0
    try:
        deadline = time.monotonic() + 300
        while done < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the consume floor read {done} of {events} events in 300 s")
            records = [r for r in consumer.consume(BATCH, 0.2) if r.error() is None]
            if not records:
                continue
            if not started:
                started = time.perf_counter()
            _apply_postgres(connection, group, records)
            consumer.commit(
                offsets=[
                    TopicPartition(r.topic(), r.partition(), r.offset() + 1)
                    for r in _last_per_partition(records)
                ],
                asynchronous=False,
            )
            done += len(records)
        return FloorFigures(
            "hand-written consume loop (confluent-kafka + psycopg)", done, time.perf_counter() - started
        )
    finally:
        consumer.close()
        connection.close()


def _apply_postgres(connection: Any, group: str, records: list[Any]) -> None:
    ids, effects = [], {}
    for record in records:
        event_id = dict(record.headers() or ())[Header.EVENT_ID].decode()
        ids.append(event_id)
        effects[event_id] = _effect(record.value())
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_floor_seen (consumer, event_id) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (group, ids),
        )
        fresh = [row[0] for row in cursor.fetchall()]
        if fresh:
            cursor.execute(
                "INSERT INTO bench_floor_effects (consumer, event_id, order_id, state) "
                "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[])",
                (group, fresh, [effects[i][0] for i in fresh], [effects[i][1] for i in fresh]),
            )
    connection.commit()


def _last_per_partition(records: list[Any]) -> list[Any]:
    last: dict[tuple[str, int], Any] = {}
    for record in records:
        last[(record.topic(), record.partition())] = record
    return list(last.values())


def kafka_relay_floor(servers: str, url: str, schema: str, topic: str, events: int) -> FloorFigures:
    """Relay the ``events`` unpublished outbox rows of ``topic`` with a hand-written loop (see the module)."""
    producer = Producer(
        {"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
    )
    connection = _connect_postgres(url, schema)
    failures: list[str] = []

    def report(error: Any, _record: Any) -> None:
        if error is not None:
            failures.append(str(error))

    done = 0
    started = time.perf_counter()
    try:
        while done < events:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id, topic, key, headers, value FROM outbox WHERE published_at IS NULL "
                    "AND topic = %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (topic, RELAY_BATCH),
                )
                rows = cursor.fetchall()
                if not rows:
                    raise AssertionError(f"the relay floor found {done} of {events} rows")
                for _id, row_topic, key, headers, value in rows:
                    header_list: list[tuple[str, str | bytes | None]] = list(orjson.loads(headers).items())
                    producer.produce(row_topic, value, key.encode(), headers=header_list, on_delivery=report)
                if producer.flush(30) or failures:
                    raise RuntimeError(f"Kafka did not acknowledge the batch: {failures[:1]}")
                cursor.execute(
                    "UPDATE outbox SET published_at = extract(epoch FROM now()) WHERE id = ANY(%s)",
                    ([row[0] for row in rows],),
                )
            connection.commit()
            done += len(rows)
        return FloorFigures(
            "hand-written relay (psycopg + confluent-kafka)", done, time.perf_counter() - started
        )
    finally:
        connection.close()


def sqlite_log_consume_floor(path: str, topic: str, partitions: int, events: int) -> FloorFigures:
    """Consume ``events`` rows of ``topic`` from the embedded log, hand-written (see the module)."""
    import sqlite3

    group = f"bench.floor.{uuid.uuid4().hex[:10]}"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(_DEDUPE)
    connection.execute(_EFFECTS)
    done, started = 0, time.perf_counter()
    try:
        for partition in range(partitions):
            offset = 0
            while rows := connection.execute(LOG_PAGE, (topic, partition, offset, BATCH)).fetchall():
                _apply_sqlite(connection, group, topic, partition, rows)
                offset = int(rows[-1][0]) + 1
                done += len(rows)
        seconds = time.perf_counter() - started
        return FloorFigures("hand-written consume loop (sqlite3 over bus_log)", done, seconds)
    finally:
        connection.close()


def _apply_sqlite(connection: Any, group: str, topic: str, partition: int, rows: list[Any]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        fresh = []
        for _offset, _key, headers, value in rows:
            event_id = orjson.loads(headers)[Header.EVENT_ID]
            cursor = connection.execute(
                "INSERT OR IGNORE INTO bench_floor_seen (consumer, event_id) VALUES (?, ?)", (group, event_id)
            )
            if cursor.rowcount:
                fresh.append((group, event_id, *_effect(value)))
        connection.executemany(
            "INSERT INTO bench_floor_effects (consumer, event_id, order_id, state) VALUES (?, ?, ?, ?)", fresh
        )
        connection.execute(SAVE_OFFSET, (group, topic, partition, int(rows[-1][0]) + 1))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
