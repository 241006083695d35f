"""The sequenced parking lot and dead-letter queue, and the operations on it.

One table, ``parked``, holds every message a consumer could not apply yet, with
a status:

* ``retrying`` — the head of its entity's sequence, retried at ``next_attempt_at``;
* ``dead`` — the head, dead-lettered: waits for an operator (replay or discard);
* ``blocked`` — a later event of the same entity, stored behind the head and
  never applied before it (events of one entity are applied in order).

When a head is applied (retry or replay) or discarded, the next blocked row of
its entity becomes the head, due at once. Malformed messages have no trusted
entity: they are dead-lettered without blocking anything (``entity_key`` NULL).

:class:`DeadLetterQueue` is the operator's view (CLI ``strowger dlq``, HTTP ``/dlq``).
Replay only changes rows (dead → retrying, due now): the consumer's own runtime
applies them, so replay works from any process, and it is idempotent because the
inbox turns an already-applied event into a no-op. In a split cluster operations
reads every component's ``parked`` through one read-only view and writes each
letter in its owner's table (``home_of``: docs/operations.md, "Database layout").
"""

from __future__ import annotations

import enum
import logging
import traceback as tb
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from strowger.bus.port import Delivery
from strowger.events.envelope import Message
from strowger.store.db import Database, Params, Row, TableSet, TextArray, Transaction

log = logging.getLogger("strowger.deadletters")

PARKED_TABLES = TableSet(
    name="parked",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS parked (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            consumer TEXT NOT NULL, entity_key TEXT, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, key TEXT NOT NULL,
            headers TEXT NOT NULL, value BLOB NOT NULL, delivered_at REAL NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            error_type TEXT, error_message TEXT, traceback TEXT,
            first_failed_at REAL, last_failed_at REAL, next_attempt_at REAL, created_at REAL NOT NULL,
            UNIQUE (consumer, event_id))""",
        "CREATE INDEX IF NOT EXISTS parked_sequence ON parked (consumer, entity_key, id)",
        "CREATE INDEX IF NOT EXISTS parked_due ON parked (consumer, status, next_attempt_at)",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS parked (
            id BIGSERIAL PRIMARY KEY,
            consumer TEXT NOT NULL, entity_key TEXT, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" BIGINT NOT NULL, key TEXT NOT NULL,
            headers TEXT NOT NULL, value BYTEA NOT NULL, delivered_at DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            error_type TEXT, error_message TEXT, traceback TEXT,
            first_failed_at DOUBLE PRECISION, last_failed_at DOUBLE PRECISION,
            next_attempt_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (consumer, event_id))""",
        "CREATE INDEX IF NOT EXISTS parked_sequence ON parked (consumer, entity_key, id)",
        "CREATE INDEX IF NOT EXISTS parked_due ON parked (consumer, status, next_attempt_at)",
    ],
)

_COLUMNS = (
    'id, consumer, entity_key, event_id, event_type, topic, partition, "offset", key, headers, value, '
    "delivered_at, status, attempts, error_type, error_message, traceback, first_failed_at, "
    "last_failed_at, next_attempt_at, created_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM parked"  # noqa: S608 (constant)


class Status(enum.StrEnum):
    RETRYING = "retrying"
    DEAD = "dead"
    BLOCKED = "blocked"


def now() -> float:
    return datetime.now(UTC).timestamp()


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a handler failed, captured where it failed."""

    error_type: str
    message: str
    traceback: str
    at: float

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        return cls(
            error_type=type(error).__name__,
            message=str(error) or repr(error),
            traceback="".join(tb.format_exception(error)),
            at=now(),
        )


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A message a consumer has not applied yet (or gave up on), with its whole failure context."""

    id: int
    consumer: str
    entity_key: str | None
    event_id: str
    event_type: str
    message: Message
    partition: int
    offset: int
    delivered_at: datetime
    status: Status
    attempts: int  # failed attempts so far; retries = attempts - 1
    error_type: str | None
    error_message: str | None
    traceback: str | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    def delivery(self) -> Delivery:
        """The delivery as the consumer first received it (for the handler's metadata)."""
        return Delivery(
            message=self.message,
            partition=self.partition,
            offset=self.offset,
            timestamp=self.delivered_at,
            redelivered=True,
        )

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        """The JSON view used by the HTTP API (``full`` adds body, headers and traceback)."""
        view: dict[str, Any] = {
            "id": self.id,
            "consumer": self.consumer,
            "entityKey": self.entity_key,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "topic": self.message.topic,
            "partition": self.partition,
            "offset": self.offset,
            "status": self.status.value,
            "attempts": self.attempts,
            "retries": self.retries,
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "firstFailedAt": _iso(self.first_failed_at),
            "lastFailedAt": _iso(self.last_failed_at),
            "nextAttemptAt": _iso(self.next_attempt_at),
            "createdAt": _iso(self.created_at),
        }
        if full:
            view["key"] = self.message.key
            view["headers"] = dict(self.message.headers)
            view["body"] = self.message.value.decode("utf-8", errors="replace")
            view["traceback"] = self.traceback
        return view


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parked(row: Row) -> ParkedMessage:
    (id_, consumer, entity_key, event_id, event_type, topic, partition, offset, key, headers, value,
     delivered_at, status, attempts, error_type, error_message, traceback, first_failed_at,
     last_failed_at, next_attempt_at, created_at) = row  # fmt: skip
    return ParkedMessage(
        id=int(id_),
        consumer=consumer,
        entity_key=entity_key,
        event_id=event_id,
        event_type=event_type,
        message=Message(topic=topic, key=key, headers=orjson.loads(headers), value=bytes(value)),
        partition=int(partition),
        offset=int(offset),
        delivered_at=datetime.fromtimestamp(delivered_at, UTC),
        status=Status(status),
        attempts=int(attempts),
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        first_failed_at=_time(first_failed_at),
        last_failed_at=_time(last_failed_at),
        next_attempt_at=_time(next_attempt_at),
        created_at=datetime.fromtimestamp(created_at, UTC),
    )


def event_id_of(delivery: Delivery) -> str:
    """The message's event id, or a stable stand-in built from where it sits in the log."""
    message = delivery.message
    return message.event_id or f"no-event-id:{message.topic}:{delivery.partition}:{delivery.offset}"


class ParkingLot:
    """The runtime's side of the ``parked`` table (always inside the runtime's transaction)."""

    async def blocked(self, tx: Transaction, consumer: str, entity_key: str, *, postgresql: bool) -> bool:
        """Whether an earlier event of ``entity_key`` is parked or dead for ``consumer``.

        On PostgreSQL the rows are share-locked (no LIMIT: a row deleted while we wait would
        otherwise hide the one behind it), so a concurrent retry of the head settles first and
        we see its outcome, never a head that is about to disappear.
        """
        query = "SELECT id FROM parked WHERE consumer = ? AND entity_key = ?"
        query += " FOR SHARE" if postgresql else " LIMIT 1"
        return bool(await tx.fetchall(query, (consumer, entity_key)))

    async def blocked_keys(
        self, tx: Transaction, consumer: str, entity_keys: Sequence[str], *, postgresql: bool
    ) -> set[str]:
        """Which of ``entity_keys`` are blocked for ``consumer``: :meth:`blocked` for a batch, one query."""
        if not entity_keys:
            return set()
        if postgresql:  # one array: one statement text whatever the batch's size (prepared once)
            query = "SELECT entity_key FROM parked WHERE consumer = ? AND entity_key = ANY(?) FOR SHARE"
            return {str(key) for (key,) in await tx.fetchall(query, (consumer, TextArray(entity_keys)))}
        marks = ", ".join("?" * len(entity_keys))
        query = f"SELECT entity_key FROM parked WHERE consumer = ? AND entity_key IN ({marks})"  # noqa: S608 (placeholders only)
        return {str(key) for (key,) in await tx.fetchall(query, (consumer, *entity_keys))}

    async def park(
        self,
        tx: Transaction,
        consumer: str,
        delivery: Delivery,
        *,
        entity_key: str | None,
        status: Status,
        failure: Failure | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Store ``delivery`` for ``consumer``; a redelivery of a message already parked is a no-op."""
        message = delivery.message
        failed_at = failure.at if failure else None
        await tx.execute(
            "INSERT INTO parked (consumer, entity_key, event_id, event_type, topic, partition, "
            '"offset", key, headers, value, delivered_at, status, attempts, error_type, error_message, '
            "traceback, first_failed_at, last_failed_at, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (consumer, event_id) DO NOTHING",
            (
                consumer, entity_key, event_id_of(delivery), message.event_type, message.topic,
                delivery.partition, delivery.offset, message.key,
                orjson.dumps(dict(message.headers)).decode(), message.value,
                delivery.timestamp.timestamp(), status.value, 1 if failure else 0,
                failure.error_type if failure else None, failure.message if failure else None,
                failure.traceback if failure else None, failed_at, failed_at, next_attempt_at, now(),
            ),
        )  # fmt: skip

    async def due(self, database: Database, consumer: str, limit: int = 100) -> list[int]:
        """Ids of ``consumer``'s heads whose retry time has come, earliest first."""
        rows = await database.fetchall(
            "SELECT id FROM parked WHERE consumer = ? AND status = ? AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (consumer, Status.RETRYING.value, now(), limit),
        )
        return [int(row[0]) for row in rows]

    async def next_due_at(self, database: Database, consumer: str) -> float | None:
        """When ``consumer``'s next retry is due (epoch seconds), or None."""
        row = await database.fetchone(
            "SELECT MIN(next_attempt_at) FROM parked WHERE consumer = ? AND status = ?",
            (consumer, Status.RETRYING.value),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def claim(self, tx: Transaction, parked_id: int, *, postgresql: bool) -> ParkedMessage | None:
        """The due head ``parked_id``, locked for this transaction; None if gone, not due, or taken."""
        lock = " FOR UPDATE SKIP LOCKED" if postgresql else ""
        row = await tx.fetchone(
            f"{_SELECT} WHERE id = ? AND status = ? AND next_attempt_at <= ?{lock}",
            (parked_id, Status.RETRYING.value, now()),
        )
        return None if row is None else _parked(row)

    async def promote_stranded(self, database: Database, consumer: str) -> int:
        """Make blocked rows with nothing before them heads (a safety net for races); returns how many."""
        stranded = await database.fetchall(
            "SELECT p.id FROM parked p WHERE p.consumer = ? AND p.status = ? AND NOT EXISTS "
            "(SELECT 1 FROM parked q WHERE q.consumer = p.consumer AND q.entity_key = p.entity_key "
            "AND q.id < p.id)",
            (consumer, Status.BLOCKED.value),
        )
        if stranded:
            async with database.transaction() as tx:
                await tx.executemany(
                    "UPDATE parked SET status = ?, next_attempt_at = ? WHERE id = ? AND status = ?",
                    [(Status.RETRYING.value, now(), row[0], Status.BLOCKED.value) for row in stranded],
                )
        return len(stranded)

    async def resolve(self, tx: Transaction, head: ParkedMessage) -> None:
        """``head`` is done (applied or discarded): drop it and make the next of its entity due."""
        await tx.execute("DELETE FROM parked WHERE id = ?", (head.id,))
        if head.entity_key is not None:
            await promote_next(tx, head.consumer, head.entity_key)

    async def failed_again(
        self,
        tx: Transaction,
        head: ParkedMessage,
        failure: Failure,
        backoff: Sequence[float],
        *,
        permanent: bool,
    ) -> Status:
        """Record another failure of ``head``: retry later, or dead-letter when retries are spent."""
        attempts = head.attempts + 1
        if permanent or attempts > len(backoff):
            status, next_at = Status.DEAD, None
        else:
            status, next_at = Status.RETRYING, failure.at + backoff[attempts - 1]
        await tx.execute(
            "UPDATE parked SET status = ?, attempts = ?, error_type = ?, error_message = ?, traceback = ?, "
            "first_failed_at = COALESCE(first_failed_at, ?), last_failed_at = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (status.value, attempts, failure.error_type, failure.message, failure.traceback, failure.at,
             failure.at, next_at, head.id),
        )  # fmt: skip
        return status


async def promote_next(tx: Transaction, consumer: str, entity_key: str, *, table: str = "parked") -> None:
    """Make the oldest blocked message of the entity its new head, due now (if no head remains)."""
    head = await tx.fetchone(
        f"SELECT id, status FROM {table} WHERE consumer = ? AND entity_key = ? ORDER BY id LIMIT 1",  # noqa: S608 (a table name of ours)
        (consumer, entity_key),
    )
    if head is not None and head[1] == Status.BLOCKED.value:
        await tx.execute(
            f"UPDATE {table} SET status = ?, next_attempt_at = ? WHERE id = ?",  # noqa: S608 (a table name of ours)
            (Status.RETRYING.value, now(), head[0]),
        )


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to (every given criterion must match)."""

    consumer: str | None = None
    error_type: str | None = None
    entity_key: str | None = None
    older_than: timedelta | None = None  # dead-lettered at least this long ago
    newer_than: timedelta | None = None  # dead-lettered at most this long ago
    ids: Sequence[int] | None = None

    def where(self) -> tuple[str, Params]:
        clauses: list[str] = ["status = ?"]
        params: list[object] = [Status.DEAD.value]
        for column, value in (
            ("consumer", self.consumer),
            ("error_type", self.error_type),
            ("entity_key", self.entity_key),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.older_than is not None:
            clauses.append("last_failed_at <= ?")
            params.append(now() - self.older_than.total_seconds())
        if self.newer_than is not None:
            clauses.append("last_failed_at >= ?")
            params.append(now() - self.newer_than.total_seconds())
        if self.ids is not None:
            clauses.append(f"id IN ({', '.join('?' * len(self.ids)) or 'NULL'})")
            params.extend(self.ids)
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay did (or, with dry_run, would do)."""

    dry_run: bool
    replayed: Sequence[ParkedMessage]

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "count": len(self.replayed),
            "ids": [letter.id for letter in self.replayed],
        }


def _here(consumer: str) -> str:
    return "parked"


class DeadLetterQueue:
    """The operator's view of dead letters: list, show, replay, discard.

    Reads go to ``parked``; a replay or discard writes where ``home_of(consumer)`` says the
    letter lives (another component's ``"schema".parked`` in a split cluster; None: unknown,
    the letter is left alone). By default every letter lives in ``parked``."""

    def __init__(self, database: Database, *, home_of: Callable[[str], str | None] = _here) -> None:
        self.database = database
        self.home_of = home_of

    async def prepare(self) -> None:
        await self.database.create_tables(PARKED_TABLES)

    async def find(
        self, where: DeadLetterFilter = DeadLetterFilter(), *, limit: int = 100
    ) -> list[ParkedMessage]:
        """Dead letters matching ``where``, oldest first."""
        await self.prepare()
        sql, params = where.where()
        rows = await self.database.fetchall(f"{_SELECT} WHERE {sql} ORDER BY id LIMIT ?", (*params, limit))
        return [_parked(row) for row in rows]

    async def show(self, parked_id: int) -> ParkedMessage | None:
        """One parked message (dead, retrying or blocked) by id."""
        await self.prepare()
        row = await self.database.fetchone(f"{_SELECT} WHERE id = ?", (parked_id,))
        return None if row is None else _parked(row)

    async def waiting_behind(self, letter: ParkedMessage) -> int:
        """How many later events of the same entity wait behind ``letter``."""
        if letter.entity_key is None:
            return 0
        row = await self.database.fetchone(
            "SELECT COUNT(*) FROM parked WHERE consumer = ? AND entity_key = ? AND id > ?",
            (letter.consumer, letter.entity_key, letter.id),
        )
        return int(row[0]) if row else 0

    async def replay(self, where: DeadLetterFilter, *, dry_run: bool = False) -> ReplayReport:
        """Hand matching dead letters back to their consumer's runtime (due now, retries reset)."""
        await self.prepare()
        sql, params = where.where()
        async with self.database.transaction() as tx:
            found = [_parked(row) for row in await tx.fetchall(f"{_SELECT} WHERE {sql} ORDER BY id", params)]
            homes = self._homes(found)
            if not dry_run:
                for home, letters in homes.items():
                    await tx.executemany(
                        f"UPDATE {home} SET status = ?, attempts = 0, next_attempt_at = ? "  # noqa: S608 (a table name of ours)
                        "WHERE id = ? AND status = ?",
                        [(Status.RETRYING.value, now(), letter.id, Status.DEAD.value) for letter in letters],
                    )
        replayed = sorted((letter for letters in homes.values() for letter in letters), key=lambda x: x.id)
        return ReplayReport(dry_run=dry_run, replayed=replayed)

    def _homes(self, letters: Sequence[ParkedMessage]) -> dict[str, list[ParkedMessage]]:
        """``letters`` by the table each lives in; those of an unknown home are logged and left out."""
        homes: dict[str, list[ParkedMessage]] = {}
        for letter in letters:
            if (home := self._home(letter)) is not None:
                homes.setdefault(home, []).append(letter)
        return homes

    def _home(self, letter: ParkedMessage) -> str | None:
        home = self.home_of(letter.consumer)
        if home is None:
            log.warning("dead letter %s of unknown consumer %r left alone", letter.id, letter.consumer)
        return home

    async def discard(self, parked_id: int) -> ParkedMessage | None:
        """Drop one dead letter for good (the next event of its entity is then applied); None if absent."""
        await self.prepare()
        async with self.database.transaction() as tx:
            row = await tx.fetchone(f"{_SELECT} WHERE id = ? AND status = ?", (parked_id, Status.DEAD.value))
            letter = None if row is None else _parked(row)
            home = None if letter is None else self._home(letter)
            if letter is None or home is None:
                return None
            await tx.execute(f"DELETE FROM {home} WHERE id = ?", (letter.id,))  # noqa: S608 (a table name of ours)
            if letter.entity_key is not None:
                await promote_next(tx, letter.consumer, letter.entity_key, table=home)
        return letter

    async def counts(self) -> Mapping[str, int]:
        """Parked messages per status (for metrics and the CLI summary)."""
        await self.prepare()
        rows = await self.database.fetchall("SELECT status, COUNT(*) FROM parked GROUP BY status")
        return {str(status): int(count) for status, count in rows}
