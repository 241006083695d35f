"""The event store port: one immutable stream of events per aggregate.

Guarantees every backend keeps (tests/contract/eventstore_contract.py proves them):

* ``append`` takes the CALLER's transaction, so the events and the outbox rows
  they produce commit or roll back together; it never opens one of its own.
* Optimistic concurrency: an append states the stream version it was decided
  on; if the stream moved on, :class:`~strowger.errors.ConcurrencyConflict`
  (transient: reload and retry the command) is raised and the transaction must
  roll back (letting the exception leave ``async with database.transaction()``
  does that).
* Every event has a global ``position``. Positions become visible in order:
  a reader that has seen position ``p`` will never later see an event below
  ``p`` appear, even when writers commit concurrently (see each backend for how).
* Events are never updated or deleted; old schema versions are upcast on read
  (:mod:`strowger.store.upcasting`), except by :meth:`EventStore.history`,
  which shows what was recorded.
* Snapshots are an optimisation only: a snapshot at version ``v`` holds the
  state after event ``v``; loads as of an earlier point ignore it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from strowger.errors import ConcurrencyConflict, MalformedMessage
from strowger.store.db import Database, Row, TableSet, Transaction
from strowger.store.upcasting import Payload, Upcasters

# The largest version a stream may reach: an open upper bound that keeps ONE SQL text per query.
MAX_VERSION = 2**62


# Random bytes for event ids, drawn 256 ids at a time: one getrandom() system call per id
# cost more than the rest of a one-event append on a virtual machine.
IDS_PER_DRAW = 256
_random_ids: list[str] = []
# A forked child must not reuse the bytes its parent drew.
os.register_at_fork(after_in_child=_random_ids.clear)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_event_id() -> str:
    """A random (version 4) UUID string, from the operating system's CSPRNG like ``uuid4``."""
    try:
        return _random_ids.pop()
    except IndexError:
        _random_ids.extend(_draw_ids())
        return _random_ids.pop()


def _draw_ids() -> list[str]:
    digits = os.urandom(16 * IDS_PER_DRAW).hex()
    # Version nibble 4 and variant bits 10 (RFC 9562) overwrite random bits, as uuid4() does.
    return [
        f"{d[:8]}-{d[8:12]}-4{d[13:16]}-{_VARIANT[d[16]]}{d[17:20]}-{d[20:]}"
        for d in (digits[start : start + 32] for start in range(0, len(digits), 32))
    ]


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended (its version and position are given by the store)."""

    event_type: str
    payload: Mapping[str, Any]
    schema_version: int = 1
    event_id: str = field(default_factory=new_event_id)
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """An event as the store holds it (``payload`` is upcast unless read through ``history``)."""

    stream_id: str
    version: int
    position: int
    event_id: str
    event_type: str
    schema_version: int
    recorded_at: datetime
    correlation_id: str | None
    causation_id: str | None
    payload: Payload


_new_object = object.__new__


def new_event(
    event_type: str,
    payload: Mapping[str, Any],
    schema_version: int,
    correlation_id: str | None,
    causation_id: str | None,
) -> NewEvent:
    """A NewEvent with a fresh id, built without the frozen ``__init__`` (see :func:`stored_event`)."""
    event: NewEvent = _new_object(NewEvent)
    event.__dict__.update(
        event_type=event_type,
        payload=payload,
        schema_version=schema_version,
        event_id=new_event_id(),
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    return event


def stored_event(
    stream_id: str,
    version: int,
    position: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    recorded_at: datetime,
    correlation_id: str | None,
    causation_id: str | None,
    payload: Payload,
) -> StoredEvent:
    """A StoredEvent built without the frozen ``__init__``, for the store's hot paths.

    A frozen dataclass sets each field through ``object.__setattr__``: for the
    10 fields that is more than half the cost of reading an event back. The
    values come from the store itself, so nothing is skipped but the ceremony;
    the result is the same frozen, comparable dataclass instance.
    """
    event: StoredEvent = _new_object(StoredEvent)
    event.__dict__.update(
        stream_id=stream_id,
        version=version,
        position=position,
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        recorded_at=recorded_at,
        correlation_id=correlation_id,
        causation_id=causation_id,
        payload=payload,
    )
    return event


@dataclass(frozen=True)
class Snapshot:
    """An aggregate's state after event ``version`` of its stream.

    ``schema_version`` is the version of the STATE's shape (not of any event):
    a snapshot whose shape the code no longer writes is ignored and replaced.
    """

    stream_id: str
    version: int
    schema_version: int
    state: Payload
    recorded_at: datetime


class EventStore(abc.ABC):
    """Append-only event streams with snapshots, upcasting and point-in-time reads."""

    database: Database
    upcasters: Upcasters

    @abc.abstractmethod
    async def setup(self) -> None:
        """Create the store's tables if they do not exist yet (idempotent)."""

    @abc.abstractmethod
    async def append(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
    ) -> list[StoredEvent]:
        """Append ``events`` as versions ``expected_version + 1 ...`` of ``stream_id`` inside ``tx``.

        ``expected_version`` is 0 for a new stream. Raises ConcurrencyConflict if
        the stream is not at ``expected_version``; ``tx`` must then roll back.
        Returns the events as stored (versions, positions, recorded_at).
        """

    @abc.abstractmethod
    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        tx: Transaction | None = None,
    ) -> list[StoredEvent]:
        """Upcast events of ``stream_id`` with ``after_version < version <= to_version``, in order.

        Reads in ``tx`` if given, else in a read-only snapshot.
        """

    @abc.abstractmethod
    async def history(self, stream_id: str) -> list[StoredEvent]:
        """Every event of ``stream_id`` exactly as recorded (no upcasting), oldest first."""

    @abc.abstractmethod
    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[StoredEvent]:
        """Up to ``limit`` upcast events after ``after_position`` in global order.

        Safe to poll from a checkpoint: an event never appears later below a
        position already returned, whatever order writers committed in.
        """

    @abc.abstractmethod
    async def stream_version(self, stream_id: str, *, tx: Transaction | None = None) -> int:
        """The version of the last event of ``stream_id`` (0 if it has none)."""

    @abc.abstractmethod
    async def version_at(self, stream_id: str, moment: datetime, *, tx: Transaction | None = None) -> int:
        """The version of the last event of ``stream_id`` recorded at or before ``moment`` (0 if none)."""

    @abc.abstractmethod
    async def save_snapshot(self, tx: Transaction, snapshot: Snapshot) -> None:
        """Store ``snapshot`` in ``tx`` (a second snapshot of the same version is ignored)."""

    @abc.abstractmethod
    async def latest_snapshot(
        self,
        stream_id: str,
        schema_version: int,
        *,
        at_most_version: int | None = None,
        tx: Transaction | None = None,
    ) -> Snapshot | None:
        """The newest snapshot of ``stream_id`` in state ``schema_version``, at most ``at_most_version``."""

    @asynccontextmanager
    async def reading(self, tx: Transaction | None = None) -> AsyncIterator[Transaction]:
        """``tx`` itself if given, else a read-only snapshot: several reads see one consistent state."""
        if tx is not None:
            yield tx
            return
        async with self.database.snapshot() as snapshot:
            yield snapshot


SELECT_EVENTS = (
    "SELECT stream_id, version, position, event_id, event_type, schema_version, "
    "recorded_at, correlation_id, causation_id, payload FROM strowger_events "
)
READ_STREAM = SELECT_EVENTS + "WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version"
HISTORY = SELECT_EVENTS + "WHERE stream_id = ? ORDER BY version"
READ_ALL = SELECT_EVENTS + "WHERE position > ? ORDER BY position LIMIT ?"


class SqlEventStore(EventStore):
    """The SQL shared by the SQLite and PostgreSQL stores; backends write appends and DDL.

    Table names are fixed (``strowger_events``, ``strowger_snapshots``): on
    PostgreSQL each component gets its own schema, on SQLite its own file.
    """

    tables: TableSet

    def __init__(self, database: Database, upcasters: Upcasters | None = None) -> None:
        self.database = database
        self.upcasters = upcasters if upcasters is not None else Upcasters()

    # -- backend hooks -------------------------------------------------------------

    @abc.abstractmethod
    async def _insert(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        recorded_at: datetime,
    ) -> list[int]:
        """Insert ``events`` and return their positions (in version order), or raise ConcurrencyConflict."""

    def _int(self, value: int) -> Any:
        """``value`` as a query parameter (PostgreSQL pins its type so plans stay prepared)."""
        return value

    @abc.abstractmethod
    def _dump_time(self, moment: datetime) -> Any:
        """``moment`` as the backend stores it."""

    @abc.abstractmethod
    def _load_time(self, stored: Any) -> datetime:
        """A stored time back as an aware UTC datetime."""

    # -- the port ------------------------------------------------------------------

    async def setup(self) -> None:
        await self.database.create_tables(self.tables)

    async def append(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
    ) -> list[StoredEvent]:
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version}")
        if not events:
            return []
        recorded_at = _utc_now()
        positions = await self._insert(tx, stream_id, expected_version, events, recorded_at)
        if len(positions) != len(events):
            raise ConcurrencyConflict(f"stream {stream_id!r} is not at version {expected_version}")
        return [
            stored_event(
                stream_id,
                expected_version + index,
                position,
                event.event_id,
                event.event_type,
                event.schema_version,
                recorded_at,
                event.correlation_id,
                event.causation_id,
                dict(event.payload),
            )
            for index, (event, position) in enumerate(zip(events, positions, strict=True), start=1)
        ]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        tx: Transaction | None = None,
    ) -> list[StoredEvent]:
        upper = MAX_VERSION if to_version is None else to_version
        async with self.reading(tx) as reader:
            rows = await reader.fetchall(
                READ_STREAM,
                (stream_id, self._int(after_version), self._int(upper)),
            )
        return [self._event(row, upcast=True) for row in rows]

    async def history(self, stream_id: str) -> list[StoredEvent]:
        rows = await self.database.fetchall(HISTORY, (stream_id,))
        return [self._event(row, upcast=False) for row in rows]

    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[StoredEvent]:
        rows = await self.database.fetchall(READ_ALL, (self._int(after_position), self._int(limit)))
        return [self._event(row, upcast=True) for row in rows]

    async def stream_version(self, stream_id: str, *, tx: Transaction | None = None) -> int:
        async with self.reading(tx) as reader:
            row = await reader.fetchone(
                "SELECT max(version) FROM strowger_events WHERE stream_id = ?", (stream_id,)
            )
        return int(row[0]) if row and row[0] is not None else 0

    async def version_at(self, stream_id: str, moment: datetime, *, tx: Transaction | None = None) -> int:
        async with self.reading(tx) as reader:
            row = await reader.fetchone(
                "SELECT max(version) FROM strowger_events WHERE stream_id = ? AND recorded_at <= ?",
                (stream_id, self._dump_time(_aware(moment))),
            )
        return int(row[0]) if row and row[0] is not None else 0

    async def save_snapshot(self, tx: Transaction, snapshot: Snapshot) -> None:
        await tx.execute(
            "INSERT INTO strowger_snapshots (stream_id, version, schema_version, recorded_at, state) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id, version) DO NOTHING",
            (
                snapshot.stream_id,
                self._int(snapshot.version),
                self._int(snapshot.schema_version),
                self._dump_time(_aware(snapshot.recorded_at)),
                orjson.dumps(snapshot.state),
            ),
        )

    async def latest_snapshot(
        self,
        stream_id: str,
        schema_version: int,
        *,
        at_most_version: int | None = None,
        tx: Transaction | None = None,
    ) -> Snapshot | None:
        upper = MAX_VERSION if at_most_version is None else at_most_version
        async with self.reading(tx) as reader:
            row = await reader.fetchone(
                "SELECT version, recorded_at, state FROM strowger_snapshots "
                "WHERE stream_id = ? AND schema_version = ? AND version <= ? "
                "ORDER BY version DESC LIMIT 1",
                (stream_id, self._int(schema_version), self._int(upper)),
            )
        if row is None:
            return None
        return Snapshot(
            stream_id=stream_id,
            version=int(row[0]),
            schema_version=schema_version,
            state=orjson.loads(row[2]),
            recorded_at=self._load_time(row[1]),
        )

    # -- rows ----------------------------------------------------------------------

    def _event(self, row: Row, *, upcast: bool) -> StoredEvent:
        (stream_id, version, position, event_id, event_type, schema_version) = row[:6]
        (recorded_at, correlation_id, causation_id, raw) = row[6:]
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # the store wrote it: only corruption gets here
            raise MalformedMessage(f"event {event_id} of {stream_id!r} has an unreadable payload") from exc
        if upcast and self.upcasters:
            schema_version, payload = self.upcasters.upcast(event_type, schema_version, payload)
        return stored_event(
            stream_id,
            version,
            position,
            event_id,
            event_type,
            schema_version,
            self._load_time(recorded_at),
            correlation_id,
            causation_id,
            payload,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are rejected: a point in time without a zone is ambiguous."""
    if moment.tzinfo is None:
        raise ValueError(f"a timezone-aware datetime is required, got {moment!r}")
    return moment.astimezone(UTC)


def open_event_store(database: Database, upcasters: Upcasters | None = None) -> SqlEventStore:
    """The event store for ``database``'s backend (call ``await store.setup()`` once)."""
    if database.kind == "sqlite":
        from strowger.store.eventstore_sqlite import SqliteEventStore

        return SqliteEventStore(database, upcasters)
    from strowger.store.eventstore_postgres import PostgresEventStore

    return PostgresEventStore(database, upcasters)
