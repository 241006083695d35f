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
Each pass is one transaction, so a repair and its drift event commit together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from strowger.components.inventory.service import ServiceInventory
from strowger.components.resource_ordering.pools import POOL_TABLES, ResourcePools
from strowger.events.envelope import Category, Envelope, format_time, utcnow
from strowger.events.topics import SYSTEM_EVENTS
from strowger.saga import SAGA_TABLES
from strowger.store.db import Database, Transaction
from strowger.store.outbox import OUTBOX_TABLES
from strowger.tmf.resources import RESOURCE_TABLES, EventSink

# What a pass reads and writes: sagas, pools, inventories, the outbox (drift events).
RECONCILED_TABLES = (SAGA_TABLES, POOL_TABLES, RESOURCE_TABLES, OUTBOX_TABLES)
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


class Reconciler:
    """One reconciliation pass at a time over the platform's database."""

    def __init__(
        self, database: Database, sink: EventSink, pools: ResourcePools, services: ServiceInventory
    ) -> None:
        self.database = database
        self.sink = sink
        self.pools = pools
        self.services = services

    async def run(self, *, repair: bool = True) -> list[Drift]:
        """Find drift, repair the safe cases if ``repair``, emit each drift; what was found."""
        async with self.database.transaction() as tx:
            sagas = await _sagas(tx)
            found = [
                *await self._allocations(tx, sagas, repair),
                *await self._services(tx, sagas, repair),
            ]
            for drift in found:
                await self.sink.emit(tx, _event(drift), SYSTEM_EVENTS.name)
        return found

    async def _allocations(
        self, tx: Transaction, sagas: Mapping[str, tuple[str, Mapping[str, Any]]], repair: bool
    ) -> list[Drift]:
        rows = await tx.fetchall(
            "SELECT pool, ordinal, request_id FROM resource_pool_slot WHERE request_id IS NOT NULL"
        )
        found = []
        for pool, ordinal, request_id in rows:
            saga_id = str(request_id).split("/", 1)[0]
            status = sagas.get(saga_id, ("", {}))[0]
            subject = f"{pool}#{ordinal}"
            if status in _UNDONE:
                if repair:
                    await self.pools.release(tx, str(pool), str(request_id))
                found.append(
                    Drift(ORPHANED_ALLOCATION, saga_id, subject, f"held for a {status} saga", repair)
                )
            elif not status or status == "aborted":
                why = "held by no known saga" if not status else "held by an aborted saga"
                found.append(Drift(ORPHANED_ALLOCATION, saga_id if status else "", subject, why, False))
        return found

    async def _services(
        self, tx: Transaction, sagas: Mapping[str, tuple[str, Mapping[str, Any]]], repair: bool
    ) -> list[Drift]:
        found = []
        for saga_id, (status, data) in sagas.items():
            if status not in (*_UNDONE, "completed"):
                continue
            for service in data.get("services", ()):
                if service.get("action") != "add":
                    continue
                stored = await self.services.get(tx, str(service["id"]))
                state = stored.get("state") if stored else None
                if status in _UNDONE and state == "active":
                    if repair:
                        changes = {"state": "terminated", "endDate": format_time(utcnow())}
                        await self.services.update(tx, str(service["id"]), changes)
                    detail = f"active for a {status} order"
                    found.append(
                        Drift(ACTIVE_SERVICE_OF_FAILED_ORDER, saga_id, service["id"], detail, repair)
                    )
                elif status == "completed" and state != "active":
                    detail = f"completed saga, service is {state or 'missing'}"
                    found.append(Drift(MISSING_INVENTORY, saga_id, service["id"], detail, False))
        return found


async def _sagas(tx: Transaction) -> dict[str, tuple[str, Mapping[str, Any]]]:
    rows = await tx.fetchall("SELECT saga_id, status, data FROM sagas")
    return {str(saga_id): (str(status), _json(data)) for saga_id, status, data in rows}


def _json(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value  # PostgreSQL jsonb
    loaded = orjson.loads(value)
    return loaded if isinstance(loaded, Mapping) else {}


def _event(drift: Drift) -> Envelope:
    return Envelope(
        event_type=DRIFT_EVENT,
        payload={"drift": drift.to_json()},
        entity_key=drift.saga_id or drift.subject,
        category=Category.SYSTEM,
    )
