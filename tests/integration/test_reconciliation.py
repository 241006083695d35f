"""Reconciliation: each kind of drift created by hand, then detected, repaired when safe, emitted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from strowger.bootstrap import OutboxSink
from strowger.components.inventory.service import ServiceInventory
from strowger.components.reconciliation.reconcile import (
    ACTIVE_SERVICE_OF_FAILED_ORDER,
    DRIFT_EVENT,
    MISSING_INVENTORY,
    ORPHANED_ALLOCATION,
    Reconciler,
)
from strowger.components.resource_ordering.pools import pools_from_data
from strowger.components.sample_catalog import sample_pools
from strowger.components.service_ordering.saga import fulfilment_saga
from strowger.saga import SAGA_TABLES
from strowger.saga.model import SagaStatus, new_saga
from strowger.saga.store import SagaStore
from strowger.store.db import Database
from strowger.store.outbox import OUTBOX_TABLES, Outbox
from strowger.tmf.resources import RESOURCE_TABLES

pytestmark = pytest.mark.integration
SPEC = {"serviceSpecification": {"id": "SS-CFS-FIBRE-INTERNET", "@referredType": "ServiceSpecification"}}


async def reconciler(database: Database) -> tuple[Reconciler, ServiceInventory]:
    await database.create_tables(SAGA_TABLES, RESOURCE_TABLES, OUTBOX_TABLES)
    pools = pools_from_data(database, sample_pools())
    await pools.install()
    sink = OutboxSink(Outbox(), "test")
    services = ServiceInventory(database, sink)
    return Reconciler(database, sink, pools, services), services


async def saga(database: Database, saga_id: str, status: SagaStatus, service: str) -> None:
    data = {"services": [{"id": service, "action": "add"}]}
    state = new_saga(fulfilment_saga(), saga_id, data, datetime.now(UTC))
    async with database.transaction() as tx:
        await SagaStore().insert(tx, replace(state, status=status), None)


async def held(database: Database) -> int:
    row = await database.fetchone("SELECT COUNT(*) FROM resource_pool_slot WHERE request_id IS NOT NULL")
    return int(row[0]) if row else 0


async def drift_events(database: Database) -> int:
    # Only the reconciler writes to ops.system.events here; the event type is inside the value.
    rows = await database.fetchall("SELECT value FROM outbox WHERE topic = ?", ("ops.system.events",))
    return sum(DRIFT_EVENT.encode() in bytes(row[0]) for row in rows)


async def test_drift_is_detected_safe_cases_repaired_and_emitted(sqlite_db: Database) -> None:
    job, services = await reconciler(sqlite_db)
    await saga(sqlite_db, "S-FAILED", SagaStatus.FAILED, "SVC-FAILED")
    await saga(sqlite_db, "S-DONE", SagaStatus.COMPLETED, "SVC-MISSING")
    await saga(sqlite_db, "S-RUNNING", SagaStatus.RUNNING, "SVC-RUNNING")
    async with sqlite_db.transaction() as tx:
        for saga_id in ("S-FAILED", "S-RUNNING", "S-GHOST"):  # the failed saga's release never came
            await job.pools.allocate_any(tx, "vlan", f"RO-{saga_id}", f"{saga_id}/allocate/action/vlan")
        await services.upsert(tx, {"id": "SVC-FAILED", "name": "left active", "state": "active", **SPEC})
        await services.upsert(tx, {"id": "SVC-RUNNING", "name": "in flight", "state": "active", **SPEC})

    found = await job.run()

    kinds = {(drift.kind, drift.saga_id or drift.subject, drift.repaired) for drift in found}
    assert (ORPHANED_ALLOCATION, "S-FAILED", True) in kinds
    assert (ACTIVE_SERVICE_OF_FAILED_ORDER, "S-FAILED", True) in kinds
    assert (MISSING_INVENTORY, "S-DONE", False) in kinds  # left for an operator
    assert any(d.kind == ORPHANED_ALLOCATION and not d.saga_id and not d.repaired for d in found)  # S-GHOST
    assert not any(drift.saga_id == "S-RUNNING" for drift in found)  # a running saga is never touched
    assert len(found) == 4
    assert await held(sqlite_db) == 2  # the failed saga's value was released; the others are kept
    async with sqlite_db.transaction() as tx:
        repaired = await services.get(tx, "SVC-FAILED")
        untouched = await services.get(tx, "SVC-RUNNING")
    assert repaired is not None and repaired["state"] == "terminated"
    assert untouched is not None and untouched["state"] == "active"
    assert await drift_events(sqlite_db) == 4

    again = await job.run()  # repaired drift is gone; what needs an operator is reported again
    assert {drift.kind for drift in again} == {MISSING_INVENTORY, ORPHANED_ALLOCATION}
    assert all(not drift.repaired for drift in again)


async def test_a_dry_run_reports_and_changes_nothing(sqlite_db: Database) -> None:
    job, services = await reconciler(sqlite_db)
    await saga(sqlite_db, "S-FAILED", SagaStatus.FAILED, "SVC-FAILED")
    async with sqlite_db.transaction() as tx:
        await job.pools.allocate_any(tx, "vlan", "RO-1", "S-FAILED/allocate/action/vlan")
        await services.upsert(tx, {"id": "SVC-FAILED", "name": "left active", "state": "active", **SPEC})
    found = await job.run(repair=False)
    assert {(drift.kind, drift.repaired) for drift in found} == {
        (ORPHANED_ALLOCATION, False),
        (ACTIVE_SERVICE_OF_FAILED_ORDER, False),
    }
    assert await held(sqlite_db) == 1
