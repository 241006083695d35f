"""The server-side write path of a TMF resource: components record entities in their own transaction.

An event handler already holds a transaction (its inbox entry, its own
state); the resource write joins it, so the entity, its TMF events in the
outbox and the handler's progress commit or roll back together. Writes follow
the API's rules (schema, lifecycle moves, events) except that read-only
attributes may be set. Refusals raise the platform errors the consumer runtime
understands: :class:`~strowger.errors.SchemaViolation` and
:class:`~strowger.errors.InvalidStateTransition` (permanent: dead-lettered),
:class:`~strowger.errors.NotFound`, :class:`~strowger.errors.ConcurrencyConflict`
(transient: retried).

Upserts are idempotent: applying the same entity twice changes nothing the
second time and emits no event, which is what an at-least-once consumer needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strowger.errors import SchemaViolation
from strowger.events.envelope import Envelope
from strowger.store.db import Database, Transaction
from strowger.tmf.errors import domain_errors
from strowger.tmf.patch import MERGE_PATCH
from strowger.tmf.resources import RESOURCE_TABLES, Document, EventSink, ResourceService, ResourceType, TmfApi


class ResourceWriter:
    """Writes one resource type of a :class:`TmfApi` inside the caller's transaction."""

    def __init__(
        self, api: TmfApi, resource: ResourceType, database: Database, event_sink: EventSink
    ) -> None:
        self._service = ResourceService(api, resource, database, event_sink)
        self.database = database

    @property
    def resource_name(self) -> str:
        """The entity's name in payloads and paths (``product``, ``customerBill``...)."""
        return self._service.resource.name

    async def ensure_tables(self) -> None:
        """Create the storage tables (call at start-up: they cannot be created inside a transaction)."""
        await self.database.create_tables(RESOURCE_TABLES)

    async def get(self, tx: Transaction, entity_id: str) -> Document | None:
        """The stored entity as ``tx`` sees it, or None."""
        stored = await self._service.collection.load(tx, entity_id)
        return stored.document if stored else None

    async def upsert(self, tx: Transaction, entity: Mapping[str, Any]) -> Document:
        """Create ``entity`` (keeping its ``id`` if it has one) or merge its attributes into the stored one.

        The merge is a JSON Merge Patch: attributes absent from ``entity`` are
        kept, ``None`` removes one, arrays are replaced whole.
        """
        entity_id = entity.get("id")
        if entity_id is not None and (not isinstance(entity_id, str) or not entity_id):
            raise SchemaViolation(f"{self.resource_name}.id must be a non-empty string, got {entity_id!r}")
        with domain_errors():
            if entity_id and await self.get(tx, entity_id) is not None:
                changes = {key: value for key, value in entity.items() if key not in ("id", "href")}
                return await self.update(tx, entity_id, changes)
            return await self._service.insert(tx, entity, resource_id=entity_id)

    async def upsert_from_event(self, tx: Transaction, envelope: Envelope) -> Document:
        """Upsert the entity an event carries as ``event.<resource name>`` (e.g. ``event.product``)."""
        entity = envelope.payload.get(self.resource_name)
        if not isinstance(entity, Mapping):
            raise SchemaViolation(
                f"{envelope.event_type} {envelope.event_id}: event.{self.resource_name} is not an object"
            )
        return await self.upsert(tx, entity)

    async def update(self, tx: Transaction, entity_id: str, changes: Mapping[str, Any]) -> Document:
        """Merge ``changes`` into the stored entity; lifecycle moves must be legal."""
        with domain_errors():
            return await self._service.update(tx, entity_id, changes, MERGE_PATCH, enforce_read_only=False)

    async def set_state(self, tx: Transaction, entity_id: str, state: str) -> Document:
        """Move the entity's lifecycle attribute (``status``, ``state``...) to ``state``."""
        lifecycle = self._service.resource.lifecycle
        if lifecycle is None:
            raise TypeError(f"{self.resource_name} has no lifecycle")
        return await self.update(tx, entity_id, {lifecycle.attribute: state})

    async def remove(self, tx: Transaction, entity_id: str) -> None:
        """Delete the entity, emitting its DeleteEvent; NotFound if there is none."""
        with domain_errors():
            await self._service.remove(tx, entity_id)
