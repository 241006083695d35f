"""ROM: executes ``AllocateResources`` / ``ReleaseResources`` as TMF652 resource orders on the pools.

Everything happens in the caller's transaction (the consumer's unit of work):
the resource order, its TMF652 events (outbox), the pool claims and the reply
commit together or not at all. So no one can ever see an order between
``acknowledged`` and its final state: it is written once, final
(``completed``, ``failed``), with one ``ResourceOrderCreateEvent``, instead of
an insert and three updates that nobody could observe.

``ReclaimResources`` (reconciliation, from operations) frees named pool claims
left held for sagas that ended without completing; no resource order is written
for it (the reply and the drift event on ``ops.system.events`` record it).

Idempotency, so a redelivered or retried command (same ``requestId``, new
command id) never allocates twice nor leaks:

* the resource order's id is derived from the ``requestId``: a second command
  finds the order and answers again with its recorded outcome;
* each value is claimed with request id ``<requestId>/<resource ref>`` and
  holder = the resource order id, so even a claim repeated after a crash
  returns the SAME value (``ResourcePools.allocate`` is idempotent by request id);
* a ``ReleaseResources`` that arrives before its allocation (the saga gave up
  waiting) records the allocation's order as ``cancelled``: the late
  ``AllocateResources`` then fails permanently instead of claiming values no one
  will ever release.

Which failures are replies and which are retries:

* a reply ``ResourceAllocationFailed`` with ``permanent: true``: the command is
  malformed, a pool is unknown (``UnknownPool``) or exhausted (``PoolExhausted``),
  or the allocation was released before it ran. The claims made so far are
  rolled back (savepoint) and the order is recorded ``failed``;
* raised (the runtime retries with backoff, then dead-letters; the saga has its
  own timeout): every transient error: ``PoolBusy`` (free values exist but are
  being claimed by concurrent transactions), database errors, conflicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from strowger.components.contract import ALLOCATE_RESOURCES, RECLAIM_RESOURCES, RELEASE_RESOURCES, failure
from strowger.components.ordering.states import ResourceOrderItemState as ItemState
from strowger.components.ordering.states import ResourceOrderState as State
from strowger.components.resource_ordering.api import RESOURCE_ORDER, RESOURCE_ORDERING_API
from strowger.components.resource_ordering.pools import PoolExhausted, ResourcePools, UnknownPool
from strowger.errors import PermanentError
from strowger.events.envelope import Envelope, format_time, utcnow
from strowger.store.db import Database, Transaction
from strowger.tmf.resources import Document, EventSink
from strowger.tmf.writer import ResourceWriter

_ORDER_IDS = uuid.UUID("5f0c2a57-6f1e-4d3b-9a8e-2a52f1b2c0de")  # namespace of resource order ids
_SAVEPOINT = "rom_allocate"


class MalformedCommand(PermanentError):
    """A command body does not follow components/contract.py."""


def resource_order_id(request_id: str) -> str:
    """The id of the resource order that executes request ``request_id`` (stable across retries)."""
    return str(uuid.uuid5(_ORDER_IDS, request_id))


@dataclass(frozen=True)
class ResourceRequest:
    """One resource of an ``AllocateResources`` command; no ``pool_type``: configuration only."""

    ref: str
    spec_id: str
    name: str
    pool_type: str | None
    pool_scope: str | None

    @classmethod
    def parse(cls, data: Any) -> ResourceRequest:
        if not isinstance(data, Mapping) or not isinstance(data.get("ref"), str) or not data["ref"]:
            raise MalformedCommand(f"a resource needs a non-empty 'ref': {data!r}")
        return cls(
            ref=data["ref"],
            spec_id=str(data.get("specId") or ""),
            name=str(data.get("name") or data["ref"]),
            pool_type=_optional_text(data.get("poolType")),
            pool_scope=_optional_text(data.get("poolScope")),
        )


@dataclass(frozen=True)
class Allocated:
    """What one resource of the order got: ``{"ref", "poolType", "pool", "value"}`` in replies."""

    ref: str
    pool_type: str
    pool: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"ref": self.ref, "poolType": self.pool_type, "pool": self.pool, "value": self.value}


class ResourceOrdering:
    """Runs resource orders against the pools; each method returns the reply to emit."""

    def __init__(self, database: Database, pools: ResourcePools, event_sink: EventSink) -> None:
        self.pools = pools
        self.orders = ResourceWriter(RESOURCE_ORDERING_API, RESOURCE_ORDER, database, event_sink)

    async def ensure_tables(self) -> None:
        await self.orders.ensure_tables()

    async def handle(self, tx: Transaction, command: Envelope) -> Envelope:
        """The reply to ``command`` (an AllocateResources or ReleaseResources)."""
        if command.event_type == ALLOCATE_RESOURCES.name:
            return await self.allocate(tx, command)
        if command.event_type == RELEASE_RESOURCES.name:
            return await self.release(tx, command)
        if command.event_type == RECLAIM_RESOURCES.name:
            return await self.reclaim(tx, command)
        raise MalformedCommand(f"ROM does not execute {command.event_type!r}")

    # AllocateResources ---------------------------------------------------------------------

    async def allocate(self, tx: Transaction, command: Envelope) -> Envelope:
        try:
            request_id = _request_id(command)
            resources = _resources(command.payload.get("resources"))
        except MalformedCommand as error:
            return _failed(command, ALLOCATE_RESOURCES.failed, str(error))
        order_id = resource_order_id(request_id)
        recorded = await self.orders.get(tx, order_id)
        if recorded is not None:  # a redelivery or a retry of the saga: answer what was done
            return _allocation_reply(command, request_id, recorded)
        order = _new_allocation_order(order_id, command, resources)
        try:
            async with tx.savepoint(_SAVEPOINT):  # no half-allocated order
                allocated = [await self._claim(tx, order_id, request_id, resource) for resource in resources]
        except (PoolExhausted, UnknownPool) as error:
            order = _finished(order, State.FAILED, ItemState.FAILED, {}, str(error))
        else:
            by_ref = {item.ref: item for item in allocated if item is not None}
            order = _finished(order, State.COMPLETED, ItemState.COMPLETED, by_ref, None)
        return _allocation_reply(command, request_id, await self.orders.upsert(tx, order))

    async def _claim(
        self, tx: Transaction, order_id: str, request_id: str, resource: ResourceRequest
    ) -> Allocated | None:
        if resource.pool_type is None:
            return None  # configured on the network element, nothing to take from a pool
        claimed = await self.pools.allocate_any(
            tx, resource.pool_type, order_id, f"{request_id}/{resource.ref}", scope=resource.pool_scope
        )
        return Allocated(resource.ref, resource.pool_type, claimed.pool, claimed.value)

    # ReleaseResources ----------------------------------------------------------------------

    async def release(self, tx: Transaction, command: Envelope) -> Envelope:
        try:
            request_id = _request_id(command)
            allocation_request = _text(command.payload, "allocationRequestId")
        except MalformedCommand as error:
            return _failed(command, RELEASE_RESOURCES.failed, str(error))
        release_id = resource_order_id(request_id)
        recorded = await self.orders.get(tx, release_id)
        if recorded is not None:
            return _release_reply(command, request_id, recorded)
        allocation_id = resource_order_id(allocation_request)
        allocation = await self.orders.get(tx, allocation_id)
        if allocation is None:
            await self._tombstone(tx, allocation_id, command)
            released: list[Allocated] = []
        else:
            released = await self._release_items(tx, allocation_request, allocation)
        order = await self.orders.upsert(tx, _release_order(release_id, command, allocation_id, released))
        return _release_reply(command, request_id, order)

    async def _release_items(
        self, tx: Transaction, allocation_request: str, allocation: Document
    ) -> list[Allocated]:
        released = []
        for held in _allocations_of(allocation):
            if await self.pools.release(tx, held.pool, f"{allocation_request}/{held.ref}"):
                released.append(held)
        return released

    async def _tombstone(self, tx: Transaction, allocation_id: str, command: Envelope) -> None:
        """Record the allocation as cancelled, so that if it arrives late it allocates nothing."""
        await self.orders.upsert(
            tx,
            {
                "id": allocation_id,
                "state": State.CANCELLED.value,
                "cancellationDate": format_time(utcnow()),
                "cancellationReason": "released before the allocation was executed",
                "externalReference": _references(command),
                "orderItem": [],
            },
        )

    # ReclaimResources (reconciliation) ------------------------------------------------------

    async def reclaim(self, tx: Transaction, command: Envelope) -> Envelope:
        """Free the named pool claims (held for a saga that ended without completing).

        By claim, not by resource order: reconciliation saw the claims themselves, and a
        claim may have no order behind it. Every pool is checked before anything is freed."""
        try:
            request_id = _request_id(command)
            claims = _claims(command.payload.get("claims"))
            for pool, _ in claims:
                self.pools.definition(pool)
        except (MalformedCommand, UnknownPool) as error:
            return _failed(command, RECLAIM_RESOURCES.failed, str(error))
        released = [
            {"pool": pool, "requestId": claim}
            for pool, claim in claims
            if await self.pools.release(tx, pool, claim)
        ]
        payload = {"requestId": request_id, "sagaId": command.payload.get("sagaId"), "released": released}
        return command.caused(RECLAIM_RESOURCES.succeeded, payload)


# Documents -------------------------------------------------------------------------------------


def _new_allocation_order(order_id: str, command: Envelope, resources: Sequence[ResourceRequest]) -> Document:
    return {
        "id": order_id,
        "category": "allocation",
        "description": f"resources for service order {command.payload.get('serviceOrderId', '?')}",
        "orderDate": format_time(utcnow()),
        "startDate": format_time(utcnow()),
        "externalReference": _references(command),
        "orderItem": [_new_item(index, resource) for index, resource in enumerate(resources, start=1)],
        "state": State.IN_PROGRESS.value,
    }


def _finished(
    order: Document,
    state: State,
    item_state: ItemState,
    allocated: Mapping[str, Allocated],
    error: str | None,
) -> Document:
    """``order`` in its final ``state``: its items too, with the values each one holds."""
    now = format_time(utcnow())
    items = [_finished_item(item, item_state, allocated) for item in order.get("orderItem", [])]
    finished: Document = {**order, "orderItem": items, "completionDate": now, "state": state.value}
    if error is not None:
        finished["note"] = [{"id": "1", "text": error, "author": "ROM", "date": now}]
    return finished


def _new_item(index: int, resource: ResourceRequest) -> Document:
    characteristics = [{"name": "ref", "value": resource.ref}]
    if resource.pool_type is not None:
        characteristics.append({"name": "poolType", "value": resource.pool_type})
    if resource.pool_scope is not None:
        characteristics.append({"name": "poolScope", "value": resource.pool_scope})
    specification = {"id": resource.spec_id} if resource.spec_id else None
    item: Document = {
        "id": str(index),
        "action": "add",
        "quantity": 1,
        "state": ItemState.ACKNOWLEDGED.value,
        "resource": {
            "name": resource.name,
            "@type": "LogicalResource",
            "resourceCharacteristic": characteristics,
        },
    }
    if specification:
        item["resourceSpecification"] = specification
        item["resource"]["resourceSpecification"] = specification
    return item


def _finished_item(item: Document, state: ItemState, allocated: Mapping[str, Allocated]) -> Document:
    resource = dict(item.get("resource") or {})
    held = allocated.get(_characteristic(resource, "ref") or "")
    if held is not None:
        resource["resourceCharacteristic"] = [
            *resource.get("resourceCharacteristic", []),
            {"name": "pool", "value": held.pool},
            {"name": "value", "value": held.value},
        ]
        resource["resourceStatus"] = "reserved"
    return {**item, "state": state.value, "resource": resource}


def _release_order(
    release_id: str, command: Envelope, allocation_id: str, released: Sequence[Allocated]
) -> Document:
    now = format_time(utcnow())
    items = [
        {
            "id": str(index),
            "action": "delete",
            "quantity": 1,
            "state": ItemState.COMPLETED.value,
            "resource": {
                "name": held.value,
                "@type": "LogicalResource",
                "resourceStatus": "available",
                "resourceCharacteristic": [
                    {"name": "ref", "value": held.ref},
                    {"name": "poolType", "value": held.pool_type},
                    {"name": "pool", "value": held.pool},
                    {"name": "value", "value": held.value},
                ],
            },
        }
        for index, held in enumerate(released, start=1)
    ]
    allocation = {"id": allocation_id, "name": "ResourceOrder", "externalReferenceType": "ResourceOrder"}
    return {
        "id": release_id,
        "category": "release",
        "description": f"release of resource order {allocation_id}",
        "orderDate": now,
        "startDate": now,
        "completionDate": now,
        "externalReference": [*_references(command), allocation],
        "orderItem": items,
        "state": State.COMPLETED.value,
    }


def _references(command: Envelope) -> list[Document]:
    references = []
    for key, kind in (("serviceOrderId", "ServiceOrder"), ("productOrderId", "ProductOrder")):
        value = command.payload.get(key)
        if isinstance(value, str) and value:
            references.append({"id": value, "name": kind, "externalReferenceType": kind})
    return references


def _allocations_of(order: Document) -> list[Allocated]:
    held = []
    for item in order.get("orderItem", []):
        resource = item.get("resource") or {}
        ref, pool_type = _characteristic(resource, "ref"), _characteristic(resource, "poolType")
        pool, value = _characteristic(resource, "pool"), _characteristic(resource, "value")
        if ref and pool_type and pool and value:
            held.append(Allocated(ref, pool_type, pool, value))
    return held


def _characteristic(resource: Mapping[str, Any], name: str) -> str | None:
    for characteristic in resource.get("resourceCharacteristic", []):
        if characteristic.get("name") == name:
            return str(characteristic.get("value"))
    return None


# Replies ---------------------------------------------------------------------------------------


def _allocation_reply(command: Envelope, request_id: str, order: Document) -> Envelope:
    state = order.get("state")
    if state == State.COMPLETED:
        allocations = [held.to_json() for held in _allocations_of(order)]
        payload = {"requestId": request_id, "resourceOrder": order, "allocations": allocations}
        return command.caused(ALLOCATE_RESOURCES.succeeded, payload)
    reason = _note(order) or order.get("cancellationReason") or f"resource order {order['id']} is {state}"
    return _failed(command, ALLOCATE_RESOURCES.failed, str(reason), requestId=request_id, resourceOrder=order)


def _release_reply(command: Envelope, request_id: str, order: Document) -> Envelope:
    released = [held.to_json() for held in _allocations_of(order)]
    payload = {"requestId": request_id, "resourceOrder": order, "released": released}
    return command.caused(RELEASE_RESOURCES.succeeded, payload)


def _failed(command: Envelope, event_type: str, error: str, **extra: Any) -> Envelope:
    """Every failure ROM replies is permanent: transient ones are raised and retried."""
    return command.caused(event_type, {**extra, **failure(error, permanent=True)})


def _note(order: Document) -> str | None:
    notes = order.get("note") or []
    return str(notes[-1].get("text")) if notes else None


# Parsing ---------------------------------------------------------------------------------------


def _request_id(command: Envelope) -> str:
    """The ``requestId`` of a command (the saga engine also sets it beside the body)."""
    value = command.payload.get("requestId") or command.extra.get("requestId")
    if not isinstance(value, str) or not value:
        raise MalformedCommand(f"{command.event_type} {command.event_id} has no requestId")
    return value


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedCommand(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _claims(data: Any) -> list[tuple[str, str]]:
    """``[{"pool", "requestId"}]`` as (pool, claim request id) pairs."""
    if not isinstance(data, list) or not data:
        raise MalformedCommand(f"'claims' must be a non-empty list, got {data!r}")
    claims = []
    for item in data:
        if not isinstance(item, Mapping):
            raise MalformedCommand(f"a claim must be an object with 'pool' and 'requestId': {item!r}")
        claims.append((_text(item, "pool"), _text(item, "requestId")))
    return claims


def _resources(data: Any) -> list[ResourceRequest]:
    if not isinstance(data, list):
        raise MalformedCommand(f"'resources' must be a list, got {data!r}")
    resources = [ResourceRequest.parse(item) for item in data]
    refs = [resource.ref for resource in resources]
    if len(set(refs)) != len(refs):
        raise MalformedCommand(f"resource refs must be unique, got {refs}")
    return resources


def _optional_text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
