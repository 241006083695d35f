"""The event envelope: TMF notification structure plus transport headers.

On the wire a message is the TMF notification body (JSON) and a set of string
headers, so consumers can route and filter on ``eventType`` without decoding.
:func:`encode` and :func:`decode` are the only places that know that layout.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from strowger.errors import MalformedMessage


class Category(enum.StrEnum):
    """The four kinds of message, each with its own handling (docs/architecture.md)."""

    DOMAIN = "domain"  # a fact, past tense: topics, many consumers, retried
    COMMAND = "command"  # imperative: one consumer, failure reported back, dead-lettered
    NOTIFICATION = "notification"  # for external parties (SMS, email, push, webhooks)
    SYSTEM = "system"  # operational: alerts, health, drift


class Header(enum.StrEnum):
    """Transport header names carried on every message."""

    EVENT_ID = "eventId"
    EVENT_TYPE = "eventType"
    SCHEMA_VERSION = "schemaVersion"
    CATEGORY = "category"
    CORRELATION_ID = "correlationId"
    CAUSATION_ID = "causationId"
    TRACEPARENT = "traceparent"
    PRODUCER = "producer"
    PRODUCED_AT = "producedAt"
    ENTITY_KEY = "entityKey"


def new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it, at a third of its
    cost (an order takes several: its own, its events', its notifications')."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 with milliseconds and a Z, as TMF payloads show times.

    An order writes several times within the same second (its date, its events', their
    notifications'): the text up to the second is remembered, and only the milliseconds are
    written anew (``isoformat`` cost ~3 µs a call here).
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # Keyed by the time itself, not by a float timestamp: a float rounds x.9999 up to the next
    # second once the years are large (found by the property test, year 4148).
    return f"{_utc_second(moment.replace(microsecond=0))}.{moment.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(second: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole UTC second."""
    return second.isoformat(timespec="seconds")[:-6]  # without its "+00:00"


def is_date_time(value: object) -> bool:
    """Whether ``value`` is a time :func:`parse_time` reads: the test of a ``date-time`` field.

    As liberal as Python's ISO 8601 reader (the TMF samples write ``…T10:00``, ``…T10:00.000Z``
    and even ``…T23:59:59:999Z``), so what a client sends stays readable for filters, sorting
    and ``asOf``; ``"yesterday"`` or a 13th month is refused. Non-strings are left to ``type``.
    """
    if not isinstance(value, str):
        return True
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def parse_time(text: str) -> datetime:
    """An RFC 3339 time; a time without offset is taken as UTC."""
    moment = datetime.fromisoformat(text)  # 3.11 reads a trailing Z itself
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The body fields from_tmf maps to Envelope fields; anything else is kept in ``extra``.
_KNOWN_FIELDS = frozenset(
    {
        "@type", "eventId", "eventTime", "eventType", "correlationId", "domain", "title",
        "description", "priority", "timeOccurred", "timeOcurred", "source", "reportingSystem",
        "@baseType", "event",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Message:
    """What a bus carries: a topic, a routing key (the entity id), string headers and a body."""

    topic: str
    key: str
    headers: Mapping[str, str]
    value: bytes

    @property
    def event_id(self) -> str:
        return self.headers.get("eventId", "")  # Header.EVENT_ID as a plain str: read per message

    @property
    def event_type(self) -> str:
        return self.headers.get("eventType", "")  # Header.EVENT_TYPE


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event or command, in the TMF notification structure.

    ``payload`` is the content of the TMF ``event`` field, e.g.
    ``{"productOrder": {...}}``; ``entity_key`` is the id messages are routed
    and ordered by (the order id for everything about one order).
    """

    event_type: str
    payload: Mapping[str, Any]
    entity_key: str
    category: Category = Category.DOMAIN
    schema_version: int = 1
    event_id: str = field(default_factory=new_id)
    event_time: datetime = field(default_factory=utcnow)
    time_occurred: datetime | None = None
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""
    producer: str = ""
    domain: str = ""
    title: str = ""
    description: str = ""
    priority: str = ""
    source: Mapping[str, Any] | None = None
    reporting_system: Mapping[str, Any] | None = None
    type_: str = ""  # @type, defaults to event_type
    base_type: str = ""  # @baseType
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown TMF fields kept on round trip

    def caused(self, event_type: str, payload: Mapping[str, Any], **fields: Any) -> Envelope:
        """A new envelope caused by this one: same correlation id and trace, causation = this event."""
        fields.setdefault("entity_key", self.entity_key)
        return Envelope(
            event_type=event_type,
            payload=payload,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            traceparent=self.traceparent,
            **fields,
        )

    def with_producer(self, producer: str) -> Envelope:
        return self.evolve(producer=producer)

    def evolve(self, **changes: Any) -> Envelope:
        """A copy with ``changes``, as ``dataclasses.replace`` makes it, at a third of its cost:
        fields are copied, ``__init__`` (defaults, a frozen class's setattr per field) is not
        run again. Every emitted event is copied once (its producer and traceparent)."""
        unknown = changes.keys() - _ENVELOPE_FIELDS
        if unknown:
            raise TypeError(f"Envelope has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(Envelope)
        for name in _ENVELOPE_FIELDS:
            object.__setattr__(copy, name, changes[name] if name in changes else getattr(self, name))
        return copy

    def resource(self) -> Mapping[str, Any]:
        """The single resource inside ``event`` (e.g. the productOrder), or an empty mapping."""
        for value in self.payload.values():
            if isinstance(value, Mapping):
                return value
        return {}

    def to_tmf(self) -> dict[str, Any]:
        """The TMF notification body (v4 and v5 share it); ``timeOccurred`` as written by v5."""
        body: dict[str, Any] = dict(self.extra)
        body.update(
            {
                "@type": self.type_ or self.event_type,
                "eventId": self.event_id,
                "eventTime": format_time(self.event_time),
                "eventType": self.event_type,
                "correlationId": self.correlation_id or None,
                "domain": self.domain or None,
                "title": self.title or None,
                "description": self.description or None,
                "priority": self.priority or None,
                "timeOccurred": format_time(self.time_occurred or self.event_time),
                "source": self.source,
                "reportingSystem": self.reporting_system,
                "@baseType": self.base_type or None,
                "event": dict(self.payload),
            }
        )
        return {key: value for key, value in body.items() if value is not None}

    @classmethod
    def from_tmf(cls, body: Mapping[str, Any], **fields: Any) -> Envelope:
        """An envelope from a TMF notification body; accepts both timeOccurred and timeOcurred."""
        # Hot on every consumed message: plain lookups, no per-call constants (docs/benchmarks.md).
        get = body.get
        try:
            event_type = str(body["eventType"])
            payload = body["event"]
            if type(payload) is not dict and not isinstance(payload, Mapping):
                raise TypeError("'event' must be an object")
            event_time = get("eventTime")
            occurred = get("timeOccurred") or get("timeOcurred")
            values: dict[str, Any] = {
                "event_type": event_type,
                "payload": payload,
                "event_id": str(get("eventId") or new_id()),
                "event_time": parse_time(event_time) if event_time else utcnow(),
                "time_occurred": parse_time(occurred) if occurred else None,
                "correlation_id": str(get("correlationId") or ""),
                "domain": str(get("domain") or ""),
                "title": str(get("title") or ""),
                "description": str(get("description") or ""),
                "priority": str(get("priority") or ""),
                "source": get("source"),
                "reporting_system": get("reportingSystem"),
                "type_": str(get("@type") or ""),
                "base_type": str(get("@baseType") or ""),
                "extra": {} if body.keys() <= _KNOWN_FIELDS else _unknown_fields(body),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"not a TMF notification: {exc}") from exc
        if "entity_key" not in fields:
            fields["entity_key"] = str(_resource_id(payload) or values["event_id"])
        values.update(fields)
        return cls(**values)


_ENVELOPE_FIELDS = frozenset(field.name for field in fields(Envelope))


def _unknown_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in _KNOWN_FIELDS}


def _resource_id(payload: Mapping[str, Any]) -> str | None:
    for value in payload.values():
        if isinstance(value, Mapping) and value.get("id"):
            return str(value["id"])
    return None


def encode(
    envelope: Envelope,
    topic: str,
    *,
    produced_at: datetime | None = None,
    body: Mapping[str, Any] | None = None,
) -> Message:
    """The wire form of ``envelope`` on ``topic``; ``body``: its :meth:`Envelope.to_tmf`, if the
    caller built it already."""
    headers = {
        Header.EVENT_ID: envelope.event_id,
        Header.EVENT_TYPE: envelope.event_type,
        Header.SCHEMA_VERSION: str(envelope.schema_version),
        Header.CATEGORY: envelope.category.value,
        Header.CORRELATION_ID: envelope.correlation_id,
        Header.CAUSATION_ID: envelope.causation_id,
        Header.TRACEPARENT: envelope.traceparent,
        Header.PRODUCER: envelope.producer,
        Header.PRODUCED_AT: format_time(produced_at or utcnow()),
        Header.ENTITY_KEY: envelope.entity_key,
    }
    return Message(
        topic=topic,
        key=envelope.entity_key,
        headers={str(k): v for k, v in headers.items()},
        value=orjson.dumps(envelope.to_tmf() if body is None else body),
    )


_CATEGORIES = {category.value: category for category in Category}
# Plain str keys: looking up an enum member on every message costs more than the dict lookup.
_EVENT_ID, _SCHEMA_VERSION, _CATEGORY = str(Header.EVENT_ID), str(Header.SCHEMA_VERSION), str(Header.CATEGORY)
_ENTITY_KEY, _CAUSATION_ID = str(Header.ENTITY_KEY), str(Header.CAUSATION_ID)
_TRACEPARENT, _PRODUCER = str(Header.TRACEPARENT), str(Header.PRODUCER)


def decode(message: Message) -> Envelope:
    """The envelope in ``message``; MalformedMessage if it is not one (never any other error)."""
    try:
        body = orjson.loads(message.value)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage("body is not a JSON object")
    headers = message.headers
    event_id = headers.get(_EVENT_ID) or body.get("eventId")
    if not event_id:
        raise MalformedMessage("message has no eventId (header or body)")
    category_name = headers.get(_CATEGORY) or "domain"
    category = _CATEGORIES.get(category_name)
    try:
        version = int(headers.get(_SCHEMA_VERSION) or 1)
        if category is None:
            category = Category(category_name)  # raises the ValueError with the usual text
    except ValueError as exc:
        raise MalformedMessage(f"bad header: {exc}") from exc
    return Envelope.from_tmf(
        body,
        event_id=str(event_id),
        entity_key=headers.get(_ENTITY_KEY) or message.key,
        schema_version=version,
        category=category,
        causation_id=headers.get(_CAUSATION_ID, ""),
        traceparent=headers.get(_TRACEPARENT, ""),
        producer=headers.get(_PRODUCER, ""),
    )
