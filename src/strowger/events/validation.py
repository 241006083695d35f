"""Schema validation of events on produce and on consume (issue 7).

A :class:`SchemaValidator` holds the compiled validator of every (eventType,
schemaVersion) the schema registry knows, loaded once at start-up
(:meth:`SchemaValidator.load`, which also fills the registry's own cache) so the
hot path never touches the database: a dict lookup, then JSON Schema validation
of the TMF notification body, only for types that have a schema.

* An event type with NO schema at all passes, unless ``strict`` (then it is
  refused): the platform's own commands and saga events carry no TMF schema.
* A KNOWN type at a version with no schema is refused: a producer ahead of the
  registry (register the new version first; ``…V2`` types are separate subjects
  and coexist with their V1).
* Producers (``OutboxSink.emit``, ``UnitOfWork.emit``) call :meth:`check`
  before writing the outbox row: an invalid event is a bug in the producer, so
  the write fails with :class:`~strowger.errors.SchemaViolation` (a
  PermanentError): an API answers 500 and rolls its transaction back, a
  handler's event is dead-lettered with error type ``SchemaViolation``.
* Consumers (the runtime) call :meth:`check_message` after decoding and before
  the handler: an invalid event is dead-lettered at once with error type
  ``SchemaViolation`` (the validation dead-letter queue: ``strowger dlq list
  --error-type SchemaViolation``) and counted in ``strowger_schema_violations_total``.

Bus events are not upcast: a consumer receives the version that was produced
and validates it against that version's schema (the event store upcasts its
own stored events; see docs/event-store.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from strowger.errors import SchemaViolation
from strowger.events.envelope import Envelope, Message
from strowger.events.registry import EventValidator, SchemaRegistry


class SchemaValidator:
    """Validates event bodies against the registered schema of their (type, version)."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._validators: dict[tuple[str, int], EventValidator] = {}
        self._types: frozenset[str] = frozenset()

    @classmethod
    def from_schemas(
        cls, schemas: Mapping[tuple[str, int], Mapping[str, Any]], *, strict: bool = False
    ) -> SchemaValidator:
        """A validator of the given schemas (e.g. ``builtin_schemas()``), without a registry."""
        validator = cls(strict=strict)
        validator._use(
            {(t, v): EventValidator(t, v, schema) for (t, v), schema in schemas.items()},
        )
        return validator

    async def load(self, registry: SchemaRegistry) -> int:
        """Compile every version of every subject in ``registry``; returns how many (call again to
        pick up versions registered since)."""
        compiled: dict[tuple[str, int], EventValidator] = {}
        for subject in await registry.subjects():
            for version in await registry.versions(subject):
                compiled[(subject, version)] = await registry.validator(subject, version)
        self._use(compiled)
        return len(compiled)

    def _use(self, compiled: dict[tuple[str, int], EventValidator]) -> None:
        self._validators = compiled
        self._types = frozenset(event_type for event_type, _ in compiled)

    def knows(self, event_type: str) -> bool:
        """Whether any version of ``event_type`` has a schema."""
        return event_type in self._types

    def check(self, envelope: Envelope, body: Mapping[str, Any] | None = None) -> None:
        """SchemaViolation if ``envelope`` (about to be produced) does not match its schema;
        ``body``: its :meth:`Envelope.to_tmf`, if the caller built it already."""
        if self._applies(envelope.event_type):
            validator = self._validator(envelope.event_type, envelope.schema_version)
            validator.validate(envelope.to_tmf() if body is None else body)

    def check_message(self, message: Message, envelope: Envelope) -> None:
        """SchemaViolation if the received ``message`` (decoded as ``envelope``) does not match.

        The wire body is validated, not a re-encoding of the envelope: what the producer
        actually sent is what must match.
        """
        if self._applies(envelope.event_type):
            validator = self._validator(envelope.event_type, envelope.schema_version)
            validator.validate(orjson.loads(message.value))

    def _applies(self, event_type: str) -> bool:
        if event_type in self._types:
            return True
        if self.strict:
            raise SchemaViolation(f"no schema registered for event type {event_type}")
        return False

    def _validator(self, event_type: str, version: int) -> EventValidator:
        validator = self._validators.get((event_type, version))
        if validator is None:
            raise SchemaViolation(f"no schema registered for {event_type} version {version}")
        return validator
