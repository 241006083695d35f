"""The inventory command handler: ``RecordInventory`` / ``RemoveInventory`` from the fulfilment saga.

``RecordInventory`` writes the order's services into TMF638 (``state`` as
commanded, ``active`` by default) and its resources into TMF639
(``resourceStatus: reserved``, ``operationalState: enable``,
``administrativeState: unlocked``, ``usageState: active``), each linked to the
customer (``relatedParty``) and to the product and service orders
(``relatedEntity`` on a service; ``resourceCharacteristic`` on a resource, which
has no ``relatedEntity`` in TMF639 v4). ``RemoveInventory`` undoes what one
record request wrote: services ``terminated``, resources ``available``.

Everything runs in the consumer's transaction through the inventories' write
path, so the entities, their TMF events and the reply commit together.
Idempotency is keyed by ``requestId`` in a small ledger
(``inventory_command``): a repeated record replays its reply, a repeated remove
finds the entities already moved and changes nothing, and a remove that
overtakes its record leaves a tombstone so the late record writes nothing.

``TerminateServices`` is reconciliation's repair (from operations): the named
services still ``active`` become ``terminated``; idempotent by state, no ledger.

Failures: a malformed command, an illegal lifecycle move (e.g. re-activating a
terminated service) or a schema violation is replied as a permanent failure,
with every write of the command rolled back (savepoint); anything else
(database, conflicts) is raised so the runtime retries it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.contract import (
    RECORD_INVENTORY,
    REMOVE_INVENTORY,
    SERVICE_EVENTS,
    TERMINATE_SERVICES,
    failure,
)
from strowger.components.inventory.service import ResourceInventory, ServiceInventory
from strowger.errors import InvalidStateTransition, PermanentError, SchemaViolation
from strowger.events.envelope import Envelope, format_time, utcnow
from strowger.events.topics import INVENTORY_COMMANDS
from strowger.store.db import TableSet, Transaction
from strowger.tmf.resources import Document

CONSUMER_NAME = "inventory-commands"

INVENTORY_COMMAND_TABLES = TableSet(
    "inventory-commands",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS inventory_command (
            request_id TEXT PRIMARY KEY, status TEXT NOT NULL, services TEXT NOT NULL,
            resources TEXT NOT NULL, reply TEXT, updated_at TEXT NOT NULL)""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS inventory_command (
            request_id TEXT PRIMARY KEY, status TEXT NOT NULL, services TEXT NOT NULL,
            resources TEXT NOT NULL, reply TEXT, updated_at TEXT NOT NULL)""",
    ],
)

RECORDED, REMOVED = "recorded", "removed"
_SAVEPOINT = "inventory_command"


class MalformedCommand(PermanentError):
    """A command body does not follow components/contract.py."""


@dataclass(frozen=True)
class RecordRequest:
    request_id: str
    service_order_id: str
    product_order_id: str
    customer_id: str
    services: Sequence[Mapping[str, Any]]
    resources: Sequence[Mapping[str, Any]]

    @classmethod
    def parse(cls, command: Envelope) -> RecordRequest:
        payload = command.payload
        services, resources = payload.get("services", []), payload.get("resources", [])
        for name, entries in (("services", services), ("resources", resources)):
            if not isinstance(entries, list) or not all(_has_id(entry) for entry in entries):
                raise MalformedCommand(f"'{name}' must be a list of objects with an 'id'")
        return cls(
            request_id=_request_id(command),
            service_order_id=str(payload.get("serviceOrderId") or ""),
            product_order_id=str(payload.get("productOrderId") or ""),
            customer_id=str(payload.get("customerId") or ""),
            services=services,
            resources=resources,
        )


class InventoryCommands:
    """Executes the inventory commands on the TMF638/TMF639 write path; each method returns the reply."""

    def __init__(self, services: ServiceInventory, resources: ResourceInventory) -> None:
        self.services = services
        self.resources = resources

    async def ensure_tables(self) -> None:
        await self.services.ensure_tables()
        await self.services.database.create_tables(INVENTORY_COMMAND_TABLES)

    async def handle(self, tx: Transaction, command: Envelope) -> Envelope:
        if command.event_type == RECORD_INVENTORY.name:
            return await self.record(tx, command)
        if command.event_type == REMOVE_INVENTORY.name:
            return await self.remove(tx, command)
        if command.event_type == TERMINATE_SERVICES.name:
            return await self.terminate(tx, command)
        raise MalformedCommand(f"the inventory does not execute {command.event_type!r}")

    async def record(self, tx: Transaction, command: Envelope) -> Envelope:
        try:
            request = RecordRequest.parse(command)
        except MalformedCommand as error:
            return command.caused(RECORD_INVENTORY.failed, failure(str(error), permanent=True))
        ledger = await _ledger(tx, request.request_id)
        if ledger is not None:
            return _replay(command, ledger, request.request_id)
        try:
            async with tx.savepoint(_SAVEPOINT):
                services = [await self.services.upsert(tx, _service(request, s)) for s in request.services]
                resources = [
                    await self.resources.upsert(tx, _resource(request, one)) for one in request.resources
                ]
        except (InvalidStateTransition, SchemaViolation) as error:
            payload = {"requestId": request.request_id, **failure(str(error), permanent=True)}
            return command.caused(RECORD_INVENTORY.failed, payload)
        payload = {
            "requestId": request.request_id,
            "services": [{"id": s["id"], "state": s.get("state")} for s in services],
            "resources": [{"id": r["id"], "resourceStatus": r.get("resourceStatus")} for r in resources],
        }
        reply = command.caused(RECORD_INVENTORY.succeeded, payload)
        await _write_ledger(tx, request.request_id, RECORDED, services, resources, reply)
        return reply

    async def remove(self, tx: Transaction, command: Envelope) -> Envelope:
        try:
            request_id = _request_id(command)
            record_request = _text(command.payload.get("recordRequestId"), "recordRequestId")
        except MalformedCommand as error:
            return command.caused(REMOVE_INVENTORY.failed, failure(str(error), permanent=True))
        ledger = await _ledger(tx, record_request)
        services: list[Document] = []
        resources: list[Document] = []
        if ledger is None:  # the record has not run: a tombstone stops it if it arrives late
            tombstone = command.caused(
                RECORD_INVENTORY.failed, failure("removed before it was recorded", permanent=True)
            )
            await _write_ledger(tx, record_request, REMOVED, [], [], tombstone)
        else:
            try:
                async with tx.savepoint(_SAVEPOINT):
                    services = await self._terminate(tx, ledger["services"])
                    resources = await self._make_available(tx, ledger["resources"])
            except (InvalidStateTransition, SchemaViolation) as error:
                payload = {"requestId": request_id, **failure(str(error), permanent=True)}
                return command.caused(REMOVE_INVENTORY.failed, payload)
            await _mark_removed(tx, record_request)
        payload = {
            "requestId": request_id,
            "recordRequestId": record_request,
            "services": [{"id": s["id"], "state": s.get("state")} for s in services],
            "resources": [{"id": r["id"], "resourceStatus": r.get("resourceStatus")} for r in resources],
        }
        return command.caused(REMOVE_INVENTORY.succeeded, payload)

    async def terminate(self, tx: Transaction, command: Envelope) -> Envelope:
        """Reconciliation's repair: the named services still ``active`` become ``terminated``.

        By service id, not by record request: the drift is a service, which may have no ledger
        entry. One that moved on meanwhile (already terminated, suspended, gone) is left alone."""
        try:
            request_id = _request_id(command)
            ids = _service_ids(command.payload.get("services"))
        except MalformedCommand as error:
            return command.caused(TERMINATE_SERVICES.failed, failure(str(error), permanent=True))
        terminated = []
        try:
            async with tx.savepoint(_SAVEPOINT):
                for service_id in ids:
                    if await self._is_active(tx, service_id):
                        changes = {"state": "terminated", "endDate": format_time(utcnow())}
                        terminated.append(await self.services.update(tx, service_id, changes))
        except (InvalidStateTransition, SchemaViolation) as error:
            payload = {"requestId": request_id, **failure(str(error), permanent=True)}
            return command.caused(TERMINATE_SERVICES.failed, payload)
        payload = {
            "requestId": request_id,
            "sagaId": command.payload.get("sagaId"),
            "services": [{"id": s["id"], "state": s.get("state")} for s in terminated],
        }
        return command.caused(TERMINATE_SERVICES.succeeded, payload)

    async def _is_active(self, tx: Transaction, service_id: str) -> bool:
        stored = await self.services.get(tx, service_id)
        return stored is not None and stored.get("state") == "active"

    async def _terminate(self, tx: Transaction, ids: Sequence[str]) -> list[Document]:
        terminated = []
        for service_id in ids:
            stored = await self.services.get(tx, service_id)
            if stored is None:
                continue  # removed by an operator meanwhile: nothing left to terminate
            if stored.get("state") != "terminated":
                stored = await self.services.update(
                    tx, service_id, {"state": "terminated", "endDate": format_time(utcnow())}
                )
            terminated.append(stored)
        return terminated

    async def _make_available(self, tx: Transaction, ids: Sequence[str]) -> list[Document]:
        released = []
        for resource_id in ids:
            stored = await self.resources.get(tx, resource_id)
            if stored is None:
                continue
            if stored.get("resourceStatus") != "available":
                stored = await self.resources.update(
                    tx, resource_id, {"resourceStatus": "available", "usageState": "idle"}
                )
            released.append(stored)
        return released


def inventory_command_consumer(commands: InventoryCommands, *, name: str = CONSUMER_NAME) -> Consumer:
    """Executes the command in the unit of work; the reply goes out through the outbox with it."""

    async def execute(command: Envelope, uow: UnitOfWork) -> None:
        reply = await commands.handle(uow.tx, command)
        await uow.emit(reply, SERVICE_EVENTS)

    return Consumer(
        name=name,
        topics=(INVENTORY_COMMANDS.name,),
        handler=execute,
        event_types=frozenset({RECORD_INVENTORY.name, REMOVE_INVENTORY.name, TERMINATE_SERVICES.name}),
    )


# Documents -------------------------------------------------------------------------------------


def _service(request: RecordRequest, entry: Mapping[str, Any]) -> Document:
    service: Document = {
        "id": entry["id"],
        "name": str(entry.get("name") or entry["id"]),
        "state": str(entry.get("state") or "active"),
        "isServiceEnabled": True,
        "hasStarted": True,
        "startDate": format_time(utcnow()),
        "relatedEntity": _order_links(request),
        "relatedParty": _customer(request),
    }
    if entry.get("specId"):
        service["serviceSpecification"] = {
            "id": str(entry["specId"]),
            "@referredType": "ServiceSpecification",
        }
    return service


def _resource(request: RecordRequest, entry: Mapping[str, Any]) -> Document:
    characteristics = [
        {"name": name, "value": value}
        for name, value in (
            ("value", entry.get("value")),
            ("serviceOrderId", request.service_order_id),
            ("productOrderId", request.product_order_id),
        )
        if value
    ]
    resource: Document = {
        "id": entry["id"],
        "name": str(entry.get("name") or entry.get("value") or entry["id"]),
        "resourceStatus": "reserved",
        "operationalState": "enable",
        "administrativeState": "unlocked",
        "usageState": "active",
        "startOperatingDate": format_time(utcnow()),
        "resourceCharacteristic": characteristics,
        "relatedParty": _customer(request),
    }
    if entry.get("specId"):
        resource["resourceSpecification"] = {
            "id": str(entry["specId"]),
            "@referredType": "ResourceSpecification",
        }
    return resource


def _order_links(request: RecordRequest) -> list[Document]:
    links = []
    for order_id, kind in (
        (request.product_order_id, "ProductOrder"),
        (request.service_order_id, "ServiceOrder"),
    ):
        if order_id:
            links.append({"id": order_id, "role": kind, "@referredType": kind})
    return links


def _customer(request: RecordRequest) -> list[Document]:
    if not request.customer_id:
        return []
    return [{"id": request.customer_id, "role": "Customer", "@referredType": "Customer"}]


# Ledger ----------------------------------------------------------------------------------------


async def _ledger(tx: Transaction, request_id: str) -> dict[str, Any] | None:
    row = await tx.fetchone(
        "SELECT status, services, resources, reply FROM inventory_command WHERE request_id = ?", (request_id,)
    )
    if row is None:
        return None
    status, services, resources, reply = row
    return {
        "status": status,
        "services": orjson.loads(services),
        "resources": orjson.loads(resources),
        "reply": orjson.loads(reply) if reply else None,
    }


async def _write_ledger(
    tx: Transaction,
    request_id: str,
    status: str,
    services: Sequence[Document],
    resources: Sequence[Document],
    reply: Envelope,
) -> None:
    await tx.execute(
        """INSERT INTO inventory_command (request_id, status, services, resources, reply, updated_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (
            request_id,
            status,
            orjson.dumps([s["id"] for s in services]).decode(),
            orjson.dumps([r["id"] for r in resources]).decode(),
            orjson.dumps({"eventType": reply.event_type, "payload": dict(reply.payload)}).decode(),
            format_time(utcnow()),
        ),
    )


async def _mark_removed(tx: Transaction, request_id: str) -> None:
    await tx.execute(
        "UPDATE inventory_command SET status = ?, updated_at = ? WHERE request_id = ?",
        (REMOVED, format_time(utcnow()), request_id),
    )


def _replay(command: Envelope, ledger: Mapping[str, Any], request_id: str) -> Envelope:
    """A record seen before: its recorded reply, or a permanent failure if it has been removed since."""
    if ledger["status"] == REMOVED:
        reason = "the inventory of this request has been removed"
        return command.caused(
            RECORD_INVENTORY.failed, {"requestId": request_id, **failure(reason, permanent=True)}
        )
    recorded = ledger["reply"]
    return command.caused(recorded["eventType"], recorded["payload"])


# Parsing ---------------------------------------------------------------------------------------


def _request_id(command: Envelope) -> str:
    return _text(command.payload.get("requestId") or command.extra.get("requestId"), "requestId")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedCommand(f"'{name}' must be a non-empty string, got {value!r}")
    return value


def _service_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise MalformedCommand(f"'services' must be a non-empty list of service ids, got {value!r}")
    return value


def _has_id(entry: Any) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("id"), str) and bool(entry["id"])
