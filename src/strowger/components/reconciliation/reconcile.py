"""Compare service/resource inventory with saga states and resource pools; report and repair drift.

Drift found (each emitted as ``InventoryDriftDetected``, Category.SYSTEM, on ``ops.system.events``):

* ``orphanedAllocation``: a pool value held by an allocation whose saga ended
  without completing (failed/cancelled) — SAFE: released (the saga will never
  use it again); held by no known saga or by an aborted one — left to an operator;
* ``activeServiceOfFailedOrder``: a service still active in TMF638 for a failed
  or cancelled saga — SAFE: marked ``terminated``;
* ``missingInventory``: a completed saga whose services are not active in TMF638
  — left to an operator (re-recording needs the network's word).

Running sagas are never touched: their compensations may still be on the way.

Reading and repairing cross component boundaries, so a pass only reads (``sagas``,
``resource_pool_slot`` and the ``service_state`` view: in a split cluster, read-only views
granted to operations, components/database.py) and repairs by COMMANDS to the data's owners,
sent through the outbox: ``ReclaimResources`` to ROM, ``TerminateServices`` to the inventory,
one per saga, each applied idempotently in its owner's transaction. The same path in one schema
and in a split cluster. A pass is one transaction: its repair commands and drift events commit
together; ``repaired`` in a drift means its repair was sent (the owner applies it moments later,
and until then a next pass reports and sends it again, which changes nothing twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from strowger.components.contract import RECLAIM_RESOURCES, TERMINATE_SERVICES, CommandKind
from strowger.components.inventory.states import SERVICE_STATE_VIEW
from strowger.components.resource_ordering.pools import POOL_TABLES
from strowger.events.envelope import Category, Envelope
from strowger.events.topics import SYSTEM_EVENTS
from strowger.saga import SAGA_TABLES
from strowger.store.db import Database, Transaction
from strowger.store.outbox import OUTBOX_TABLES
from strowger.tmf.resources import RESOURCE_TABLES, EventSink

# What a pass reads (sagas, pools, service states) and writes (the outbox: commands, drift events).
RECONCILED_TABLES = (SAGA_TABLES, POOL_TABLES, RESOURCE_TABLES, SERVICE_STATE_VIEW, OUTBOX_TABLES)
DRIFT_EVENT = "InventoryDriftDetected"
ORPHANED_ALLOCATION = "orphanedAllocation"
ACTIVE_SERVICE_OF_FAILED_ORDER = "activeServiceOfFailedOrder"
MISSING_INVENTORY = "missingInventory"
_UNDONE = ("failed", "cancelled")


@dataclass(frozen=True)
class Drift:
    kind: str
    saga_id: str  # "" when no saga is known
    subject: str  # the pool value (pool/value) or the service id
    detail: str
    repaired: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sagaId": self.saga_id,
            "subject": self.subject,
            "detail": self.detail,
            "repaired": self.repaired,
        }


@dataclass(frozen=True)
class Outcome:
    """What a pass needs of one saga."""

    status: str
    data: Mapping[str, Any]
    correlation_id: str
    entity_key: str  # the order's key: a repair travels on the partition of the order's messages


@dataclass
class Repairs:
    """What to send the owners, per saga: pool claims to free, services to terminate."""

    claims: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    services: dict[str, list[str]] = field(default_factory=dict)

    def commands(self, sagas: Mapping[str, Outcome]) -> list[tuple[Envelope, str]]:
        """One command per saga and owner, each with its topic."""
        wanted: list[tuple[CommandKind, str, str, list[Any]]] = [
            *((RECLAIM_RESOURCES, "claims", saga, items) for saga, items in self.claims.items()),
            *((TERMINATE_SERVICES, "services", saga, items) for saga, items in self.services.items()),
        ]
        return [
            (_command(kind, name, saga_id, items, sagas[saga_id]), kind.topic)
            for kind, name, saga_id, items in wanted
        ]


class Reconciler:
    """One reconciliation pass at a time: reads the platform's state, commands the owners to repair."""

    def __init__(self, database: Database, sink: EventSink) -> None:
        self.database = database
        self.sink = sink

    async def run(self, *, repair: bool = True) -> list[Drift]:
        """Find drift, command the safe repairs if ``repair``, emit each drift; what was found."""
        async with self.database.transaction() as tx:
            sagas = await _sagas(tx)
            repairs = Repairs()
            found = [
                *await _allocations(tx, sagas, repairs, repair),
                *await _services(tx, sagas, repairs, repair),
            ]
            for command, topic in repairs.commands(sagas) if repair else []:
                await self.sink.emit(tx, command, topic)
            for drift in found:
                await self.sink.emit(tx, _event(drift), SYSTEM_EVENTS.name)
        return found


async def _allocations(
    tx: Transaction, sagas: Mapping[str, Outcome], repairs: Repairs, repair: bool
) -> list[Drift]:
    """Pool values held for sagas that did not complete (those of failed/cancelled ones into ``repairs``)."""
    rows = await tx.fetchall(
        "SELECT pool, ordinal, request_id FROM resource_pool_slot WHERE request_id IS NOT NULL"
    )
    found = []
    for pool, ordinal, request_id in rows:
        saga_id = str(request_id).split("/", 1)[0]
        status = sagas[saga_id].status if saga_id in sagas else ""
        subject = f"{pool}#{ordinal}"
        if status in _UNDONE:
            repairs.claims.setdefault(saga_id, []).append({"pool": str(pool), "requestId": str(request_id)})
            found.append(Drift(ORPHANED_ALLOCATION, saga_id, subject, f"held for a {status} saga", repair))
        elif not status or status == "aborted":
            why = "held by no known saga" if not status else "held by an aborted saga"
            found.append(Drift(ORPHANED_ALLOCATION, saga_id if status else "", subject, why, False))
    return found


async def _services(
    tx: Transaction, sagas: Mapping[str, Outcome], repairs: Repairs, repair: bool
) -> list[Drift]:
    """Services of ended sagas in the wrong state (active ones of failed/cancelled sagas into ``repairs``)."""
    found = []
    for saga_id, saga in sagas.items():
        if saga.status not in (*_UNDONE, "completed"):
            continue
        for service in saga.data.get("services", ()):
            if service.get("action") != "add":
                continue
            service_id = str(service["id"])
            state = await _service_state(tx, service_id)
            if saga.status in _UNDONE and state == "active":
                repairs.services.setdefault(saga_id, []).append(service_id)
                detail = f"active for a {saga.status} order"
                found.append(Drift(ACTIVE_SERVICE_OF_FAILED_ORDER, saga_id, service_id, detail, repair))
            elif saga.status == "completed" and state != "active":
                detail = f"completed saga, service is {state or 'missing'}"
                found.append(Drift(MISSING_INVENTORY, saga_id, service_id, detail, False))
    return found


async def _service_state(tx: Transaction, service_id: str) -> str | None:
    row = await tx.fetchone("SELECT state FROM service_state WHERE id = ?", (service_id,))
    return str(row[0]) if row and row[0] is not None else None


async def _sagas(tx: Transaction) -> dict[str, Outcome]:
    rows = await tx.fetchall("SELECT saga_id, status, data, correlation_id, entity_key FROM sagas")
    return {
        str(saga_id): Outcome(str(status), _json(data), str(correlation_id), str(entity_key))
        for saga_id, status, data, correlation_id, entity_key in rows
    }


def _json(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value  # PostgreSQL jsonb
    loaded = orjson.loads(value)
    return loaded if isinstance(loaded, Mapping) else {}


def _command(kind: CommandKind, name: str, saga_id: str, items: list[Any], saga: Outcome) -> Envelope:
    """``kind`` for the owner: ``name`` lists what to repair; its requestId is stable per saga."""
    return Envelope(
        event_type=kind.name,
        payload={"requestId": f"{saga_id}/reconcile/{name}", "sagaId": saga_id, name: items},
        entity_key=saga.entity_key or saga_id,
        category=Category.COMMAND,
        correlation_id=saga.correlation_id,  # the order's trace shows the repair
    )


def _event(drift: Drift) -> Envelope:
    return Envelope(
        event_type=DRIFT_EVENT,
        payload={"drift": drift.to_json()},
        entity_key=drift.saga_id or drift.subject,
        category=Category.SYSTEM,
    )
