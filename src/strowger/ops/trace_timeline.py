"""The order trace timeline: everything that happened for one order, across every component, in order.

The consumer runtime records one *hop* per event a consumer handled
(:meth:`TraceRecorder.record`, inside the handling transaction, so a hop exists
iff its effects committed). :meth:`TraceStore.timeline` reads the hops of an
order (by entity key) or of a conversation (by correlation id) — following the
correlation ids so the service and resource orders decomposed from a product
order come along — and computes per hop:

* ``latency``: ``producedAt`` to handled, for that consumer (transit + queueing + handling);
* ``since_cause``: how long after its cause (``causationId``) the event was produced.

``strowger trace <id>`` prints it with :func:`render_timeline`; ``GET /trace/{id}``
returns it as JSON (:data:`router`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from strowger.events.envelope import Envelope, Header, Message, format_time, parse_time
from strowger.store.db import Database, Row, TableSet, Transaction

TRACE_TABLES = TableSet(
    name="trace",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS trace_hop (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL, event_type TEXT NOT NULL, correlation_id TEXT NOT NULL,
            causation_id TEXT NOT NULL, entity_key TEXT NOT NULL, producer TEXT NOT NULL,
            topic TEXT NOT NULL, produced_at REAL NOT NULL, consumer TEXT NOT NULL,
            handled_at REAL, outcome TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS trace_hop_entity ON trace_hop (entity_key)",
        "CREATE INDEX IF NOT EXISTS trace_hop_correlation ON trace_hop (correlation_id)",
        "CREATE INDEX IF NOT EXISTS trace_hop_event ON trace_hop (event_id)",
        "CREATE INDEX IF NOT EXISTS trace_hop_produced ON trace_hop (produced_at)",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS trace_hop (
            id BIGSERIAL PRIMARY KEY,
            event_id TEXT NOT NULL, event_type TEXT NOT NULL, correlation_id TEXT NOT NULL,
            causation_id TEXT NOT NULL, entity_key TEXT NOT NULL, producer TEXT NOT NULL,
            topic TEXT NOT NULL, produced_at DOUBLE PRECISION NOT NULL, consumer TEXT NOT NULL,
            handled_at DOUBLE PRECISION, outcome TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS trace_hop_entity ON trace_hop (entity_key)",
        "CREATE INDEX IF NOT EXISTS trace_hop_correlation ON trace_hop (correlation_id)",
        "CREATE INDEX IF NOT EXISTS trace_hop_event ON trace_hop (event_id)",
        "CREATE INDEX IF NOT EXISTS trace_hop_produced ON trace_hop (produced_at)",
    ],
)

_COLUMNS = (
    "event_id, event_type, correlation_id, causation_id, entity_key, producer, topic, "
    "produced_at, consumer, handled_at, outcome"
)
MAX_HOPS = 10_000  # one order's trace is tens of hops; this only bounds a runaway correlation id


class Outcome(enum.StrEnum):
    """What a consumer did with an event (``published``: emitted, no consumer has handled it yet)."""

    PUBLISHED = "published"
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Hop:
    """One event as one consumer saw it (or, with no consumer, as it was published)."""

    event_id: str
    event_type: str
    correlation_id: str
    causation_id: str
    entity_key: str
    producer: str
    topic: str
    produced_at: datetime
    consumer: str = ""
    handled_at: datetime | None = None
    outcome: str = Outcome.APPLIED

    @classmethod
    def of(
        cls,
        envelope: Envelope,
        *,
        topic: str,
        produced_at: datetime,
        consumer: str = "",
        handled_at: datetime | None = None,
        outcome: str = Outcome.APPLIED,
    ) -> Hop:
        return cls(
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.causation_id,
            entity_key=envelope.entity_key,
            producer=envelope.producer,
            topic=topic,
            produced_at=produced_at,
            consumer=consumer,
            handled_at=handled_at,
            outcome=outcome,
        )

    def params(self) -> tuple[Any, ...]:
        handled = self.handled_at.timestamp() if self.handled_at else None
        return (
            self.event_id, self.event_type, self.correlation_id, self.causation_id, self.entity_key,
            self.producer, self.topic, self.produced_at.timestamp(), self.consumer, handled, self.outcome,
        )  # fmt: skip


def produced_at_of(message: Message, envelope: Envelope) -> datetime:
    """When ``message`` was produced: its ``producedAt`` header, else the event's time."""
    header = message.headers.get(Header.PRODUCED_AT)
    if header:
        try:
            return parse_time(header)
        except ValueError:
            pass
    return envelope.event_time


class TraceRecorder:
    """Writes hops in the caller's transaction (the consumer runtime's, after a handler ran)."""

    async def record(
        self,
        tx: Transaction,
        envelope: Envelope,
        message: Message,
        consumer: str,
        outcome: str = Outcome.APPLIED,
        *,
        handled_at: datetime | None = None,
    ) -> None:
        """Record that ``consumer`` handled ``envelope`` (delivered as ``message``) with ``outcome``."""
        hop = Hop.of(
            envelope,
            topic=message.topic,
            produced_at=produced_at_of(message, envelope),
            consumer=consumer,
            handled_at=handled_at or datetime.now(UTC),
            outcome=outcome,
        )
        await self.record_hops(tx, [hop])

    async def record_published(
        self, tx: Transaction, envelope: Envelope, topic: str, produced_at: datetime | None = None
    ) -> None:
        """Record that ``envelope`` was emitted on ``topic`` (e.g. by an API call, before any consumer)."""
        hop = Hop.of(envelope, topic=topic, produced_at=produced_at or datetime.now(UTC), outcome="published")
        await self.record_hops(tx, [hop])

    async def record_hops(self, tx: Transaction, hops: Iterable[Hop]) -> None:
        await tx.executemany(
            f"INSERT INTO trace_hop ({_COLUMNS}) VALUES ({', '.join('?' * 11)})",  # noqa: S608 (constants)
            [hop.params() for hop in hops],
        )

    async def prune(self, tx: Transaction, older_than: datetime) -> int:
        """Delete hops produced before ``older_than`` (retention); returns how many."""
        return await tx.execute("DELETE FROM trace_hop WHERE produced_at < ?", (older_than.timestamp(),))


# The timeline -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineHop:
    hop: Hop
    latency: timedelta | None  # produced -> handled by this consumer
    cause_event_type: str  # "" when the cause is not in the trace
    since_cause: timedelta | None  # produced after its cause was produced

    @property
    def at(self) -> datetime:
        return self.hop.handled_at or self.hop.produced_at

    def to_json(self) -> dict[str, Any]:
        hop = self.hop
        return {
            "eventId": hop.event_id,
            "eventType": hop.event_type,
            "topic": hop.topic,
            "entityKey": hop.entity_key,
            "correlationId": hop.correlation_id,
            "causationId": hop.causation_id or None,
            "causeEventType": self.cause_event_type or None,
            "producer": hop.producer,
            "consumer": hop.consumer or None,
            "outcome": hop.outcome,
            "producedAt": format_time(hop.produced_at),
            "handledAt": format_time(hop.handled_at) if hop.handled_at else None,
            "latencyMs": _ms(self.latency),
            "sinceCauseMs": _ms(self.since_cause),
        }


def _ms(duration: timedelta | None) -> float | None:
    return None if duration is None else round(duration.total_seconds() * 1000, 3)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The hops of one order or correlation id, in time order."""

    query: str
    hops: tuple[TimelineHop, ...]

    @property
    def started_at(self) -> datetime | None:
        return min((hop.hop.produced_at for hop in self.hops), default=None)

    @property
    def finished_at(self) -> datetime | None:
        return max((hop.at for hop in self.hops), default=None)

    @property
    def duration(self) -> timedelta:
        if self.started_at is None or self.finished_at is None:
            return timedelta(0)
        return self.finished_at - self.started_at

    @property
    def correlation_ids(self) -> list[str]:
        return sorted({hop.hop.correlation_id for hop in self.hops if hop.hop.correlation_id})

    @property
    def events(self) -> int:
        return len({hop.hop.event_id for hop in self.hops})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.query,
            "correlationIds": self.correlation_ids,
            "entityKeys": sorted({hop.hop.entity_key for hop in self.hops}),
            "events": self.events,
            "startedAt": format_time(self.started_at) if self.started_at else None,
            "finishedAt": format_time(self.finished_at) if self.finished_at else None,
            "durationMs": _ms(self.duration),
            "hops": [hop.to_json() for hop in self.hops],
        }


def build_timeline(query: str, hops: Iterable[Hop]) -> Timeline:
    """Sort ``hops`` by time and compute their latencies and causation delays (pure)."""
    hops = list(hops)
    produced: dict[str, Hop] = {}
    for hop in hops:
        earliest = produced.get(hop.event_id)
        if earliest is None or hop.produced_at < earliest.produced_at:
            produced[hop.event_id] = hop
    entries = [_entry(hop, produced.get(hop.causation_id)) for hop in hops]
    entries.sort(key=lambda entry: (entry.hop.produced_at, entry.at, entry.hop.consumer))
    return Timeline(query, tuple(entries))


def _entry(hop: Hop, cause: Hop | None) -> TimelineHop:
    latency = hop.handled_at - hop.produced_at if hop.handled_at else None
    since_cause = hop.produced_at - cause.produced_at if cause else None
    return TimelineHop(hop, latency, cause.event_type if cause else "", since_cause)


class TraceStore:
    """Reads timelines from the hops the :class:`TraceRecorder` wrote."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._ready = False

    async def prepare(self) -> None:
        if not self._ready:
            await self.database.create_tables(TRACE_TABLES)
            self._ready = True

    async def timeline(self, trace_id: str) -> Timeline:
        """The timeline of an order (entity key), a correlation id or an event id; empty if unknown."""
        await self.prepare()
        async with self.database.snapshot() as tx:
            rows = await tx.fetchall(
                "SELECT DISTINCT correlation_id FROM trace_hop"
                " WHERE (entity_key = ? OR correlation_id = ? OR event_id = ?) AND correlation_id <> ''",
                (trace_id, trace_id, trace_id),
            )
            correlation_ids = [str(row[0]) for row in rows]
            hops = await self._hops(tx, trace_id, correlation_ids)
        return build_timeline(trace_id, hops)

    async def _hops(self, tx: Transaction, trace_id: str, correlation_ids: list[str]) -> list[Hop]:
        marks = ", ".join("?" for _ in correlation_ids)
        by_correlation = f" OR correlation_id IN ({marks})" if correlation_ids else ""
        # Only constants and placeholders are formatted into the statement.
        rows = await tx.fetchall(
            f"SELECT {_COLUMNS} FROM trace_hop WHERE entity_key = ? OR event_id = ?{by_correlation}"  # noqa: S608
            f" ORDER BY produced_at, id LIMIT {MAX_HOPS}",
            (trace_id, trace_id, *correlation_ids),
        )
        return [_hop(row) for row in rows]


def _hop(row: Row) -> Hop:
    (event_id, event_type, correlation_id, causation_id, entity_key, producer, topic,
     produced_at, consumer, handled_at, outcome) = row  # fmt: skip
    return Hop(
        event_id=event_id,
        event_type=event_type,
        correlation_id=correlation_id,
        causation_id=causation_id,
        entity_key=entity_key,
        producer=producer,
        topic=topic,
        produced_at=datetime.fromtimestamp(produced_at, UTC),
        consumer=consumer,
        handled_at=datetime.fromtimestamp(handled_at, UTC) if handled_at is not None else None,
        outcome=outcome,
    )


# Presentation -----------------------------------------------------------------------------------

_OUTCOME_STYLES: Mapping[str, str] = {
    Outcome.APPLIED: "green",
    Outcome.PUBLISHED: "cyan",
    Outcome.DUPLICATE: "dim",
    Outcome.PARKED: "yellow",
    Outcome.DEAD: "bold red",
}


def _seconds(duration: timedelta | None) -> str:
    if duration is None:
        return ""
    seconds = duration.total_seconds()
    return f"{seconds * 1000:.1f} ms" if abs(seconds) < 1 else f"{seconds:.3f} s"


def render_timeline(timeline: Timeline) -> RenderableType:
    """A table for ``strowger trace <id>``: one row per hop, offsets from the first event."""
    if not timeline.hops:
        return Text(f"nothing recorded for {timeline.query}", style="yellow")
    start = timeline.started_at or datetime.now(UTC)
    table = Table(title=f"Trace {timeline.query}", title_justify="left", expand=False)
    for column in ("+time", "event", "topic", "producer → consumer", "outcome", "latency", "after cause"):
        table.add_column(column, no_wrap=column != "event")
    for entry in timeline.hops:
        hop = entry.hop
        route = f"{hop.producer or '?'} → {hop.consumer or '—'}"
        cause = f"{_seconds(entry.since_cause)} ({entry.cause_event_type})" if entry.cause_event_type else ""
        table.add_row(
            f"+{_seconds(hop.produced_at - start)}",
            Text(hop.event_type, style="bold"),
            hop.topic,
            route,
            Text(hop.outcome, style=_OUTCOME_STYLES.get(hop.outcome, "")),
            _seconds(entry.latency),
            cause,
        )
    summary = Text(
        f"{timeline.events} event(s), {len(timeline.hops)} hop(s) in {_seconds(timeline.duration)};"
        f" correlation {', '.join(timeline.correlation_ids) or '—'}",
        style="dim",
    )
    return Group(table, summary)


# HTTP -------------------------------------------------------------------------------------------

router = APIRouter(prefix="/trace", tags=["operations"])


def _store(request: Request) -> TraceStore:
    state = request.app.state
    store = getattr(state, "trace_store", None)
    if not isinstance(store, TraceStore):
        store = TraceStore(state.platform.database)
        state.trace_store = store
    return store


@router.get("/{trace_id}")
async def show_trace(trace_id: str, request: Request) -> dict[str, Any]:
    """Every hop of an order (by id), a correlation id or an event id, in time order, with latencies."""
    timeline = await _store(request).timeline(trace_id)
    if not timeline.hops:
        raise HTTPException(status_code=404, detail=f"nothing recorded for {trace_id}")
    return timeline.to_json()
