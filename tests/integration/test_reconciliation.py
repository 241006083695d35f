"""Reconciliation: each kind of drift created by hand, then detected, emitted, and repaired when safe
by the data's owners (ROM, the inventory), which execute reconciliation's commands.

The first tests run in one schema (SQLite) with the real runtime, relay and embedded bus; the last
provisions a split cluster on PostgreSQL (each component its own schema and role, no process
started) and shows operations reading the others' data through its read-only views and the owners
repairing in their own schemas from the commands in operations' outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from strowger.bootstrap import OutboxSink
from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import ConsumerRunner
from strowger.cluster.plan import plan_cluster
from strowger.cluster.provision import deprovision, provision, schema_map
from strowger.components.contract import (
    RECLAIM_RESOURCES,
    RESOURCE_EVENTS,
    SERVICE_EVENTS,
    TERMINATE_SERVICES,
)
from strowger.components.database import borrowed_names
from strowger.components.inventory.api import SERVICE_INVENTORY_API
from strowger.components.inventory.commands import InventoryCommands, inventory_command_consumer
from strowger.components.inventory.service import ResourceInventory, ServiceInventory
from strowger.components.inventory.states import SERVICE_STATE_VIEW
from strowger.components.reconciliation.reconcile import (
    ACTIVE_SERVICE_OF_FAILED_ORDER,
    DRIFT_EVENT,
    MISSING_INVENTORY,
    ORPHANED_ALLOCATION,
    Drift,
    Reconciler,
)
from strowger.components.resource_ordering.consumers import rom_consumer
from strowger.components.resource_ordering.pools import pools_from_data
from strowger.components.resource_ordering.service import ResourceOrdering
from strowger.components.sample_catalog import sample_pools
from strowger.components.service_ordering.saga import REPLY_TYPES, fulfilment_saga
from strowger.events.envelope import Category, Envelope
from strowger.events.topics import SYSTEM_EVENTS
from strowger.saga import SAGA_TABLES
from strowger.saga.model import SagaStatus, new_saga
from strowger.saga.store import SagaStore
from strowger.store.db import Database
from strowger.store.deadletters import PARKED_TABLES
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from strowger.store.postgres import PostgresDatabase
from strowger.tmf.resources import RESOURCE_TABLES

pytestmark = pytest.mark.integration
SPEC = {"serviceSpecification": {"id": "SS-CFS-FIBRE-INTERNET", "@referredType": "ServiceSpecification"}}
DEADLINE = 15.0


class Owners:
    """ROM on ``rom`` and the inventory on ``inventory`` (one database, or each its own schema)."""

    def __init__(self, rom: Database, inventory: Database) -> None:
        self.rom_db, self.inventory_db = rom, inventory
        self.outbox = Outbox()
        sink = OutboxSink(self.outbox, "owners")
        self.pools = pools_from_data(rom, sample_pools())
        self.rom = ResourceOrdering(rom, self.pools, sink)
        self.services = ServiceInventory(inventory, sink)
        self.inventory = InventoryCommands(self.services, ResourceInventory(inventory, sink))

    async def install(self) -> None:
        await self.pools.install()
        await self.rom.ensure_tables()
        await self.inventory.ensure_tables()


class World:
    """One bus; a relay per outbox; the owners' consumers. Stops everything it started."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.tasks: list[asyncio.Task[None]] = []

    def relay(self, database: Database, outbox: Outbox) -> None:
        relay = OutboxRelay(database, self.bus, outbox, poll_interval=0.05)
        self.tasks.append(asyncio.create_task(relay.run()))

    async def consume(self, owners: Owners) -> None:
        """ROM's and the inventory's command consumers, each in its owner's database."""
        for consumer, database in (
            (rom_consumer(owners.rom), owners.rom_db),
            (inventory_command_consumer(owners.inventory), owners.inventory_db),
        ):
            runner = ConsumerRunner(consumer, self.bus, database, outbox=owners.outbox, fetch_timeout=0.2)
            self.tasks.append(asyncio.create_task(runner.run()))
            async with asyncio.timeout(DEADLINE):
                await runner.started.wait()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def world(sqlite_db: Database) -> AsyncIterator[World]:
    """A bus on ``sqlite_db`` (the one schema of the SQLite tests; only the log of the split one)."""
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    world = World(bus)
    yield world
    await world.stop()
    await bus.stop()


async def saga(database: Database, saga_id: str, status: SagaStatus, service: str) -> None:
    data = {"services": [{"id": service, "action": "add"}]}
    state = new_saga(fulfilment_saga(), saga_id, data, datetime.now(UTC), correlation_id=f"corr-{saga_id}")
    async with database.transaction() as tx:
        await SagaStore().insert(tx, replace(state, status=status), None)


async def drift(owners: Owners, som: Database) -> None:
    """A failed saga whose value and service were never undone; a completed one whose service is
    missing; a running one (never touched); a value held by no saga."""
    await saga(som, "S-FAILED", SagaStatus.FAILED, "SVC-FAILED")
    await saga(som, "S-DONE", SagaStatus.COMPLETED, "SVC-MISSING")
    await saga(som, "S-RUNNING", SagaStatus.RUNNING, "SVC-RUNNING")
    async with owners.rom_db.transaction() as tx:
        for saga_id in ("S-FAILED", "S-RUNNING", "S-GHOST"):  # the failed saga's release never came
            await owners.pools.allocate_any(tx, "vlan", f"RO-{saga_id}", f"{saga_id}/allocate/action/vlan")
    async with owners.inventory_db.transaction() as tx:
        for service_id, name in (("SVC-FAILED", "left active"), ("SVC-RUNNING", "in flight")):
            await owners.services.upsert(tx, {"id": service_id, "name": name, "state": "active", **SPEC})


def assert_first_pass(found: list[Drift]) -> None:
    kinds = {(d.kind, d.saga_id or d.subject, d.repaired) for d in found}
    assert (ORPHANED_ALLOCATION, "S-FAILED", True) in kinds
    assert (ACTIVE_SERVICE_OF_FAILED_ORDER, "S-FAILED", True) in kinds
    assert (MISSING_INVENTORY, "S-DONE", False) in kinds  # left for an operator
    assert any(d.kind == ORPHANED_ALLOCATION and not d.saga_id and not d.repaired for d in found)  # S-GHOST
    assert not any(d.saga_id == "S-RUNNING" for d in found)  # a running saga is never touched
    assert len(found) == 4


async def held(rom: Database) -> int:
    row = await rom.fetchone("SELECT COUNT(*) FROM resource_pool_slot WHERE request_id IS NOT NULL")
    return int(row[0]) if row else 0


async def service_state(owners: Owners, service_id: str) -> str | None:
    async with owners.inventory_db.transaction() as tx:
        stored = await owners.services.get(tx, service_id)
    return None if stored is None else str(stored["state"])


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail the test after DEADLINE seconds."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.05)


async def repaired_by_owners(owners: Owners) -> None:
    async def released() -> bool:
        return await held(owners.rom_db) == 2  # the failed saga's; the running and the ghost one stay

    async def terminated() -> bool:
        return await service_state(owners, "SVC-FAILED") == "terminated"

    await eventually(released, "ROM frees the failed saga's VLAN")
    await eventually(terminated, "the inventory terminates the failed saga's service")
    assert await service_state(owners, "SVC-RUNNING") == "active"


async def outbox_types(database: Database, topic: str) -> list[str]:
    """The event types waiting or published in ``database``'s outbox on ``topic``."""
    rows = await database.fetchall("SELECT headers FROM outbox WHERE topic = ?", (topic,))
    return [str(orjson.loads(headers).get("eventType")) for (headers,) in rows]


# One schema --------------------------------------------------------------------------------------


async def one_schema(sqlite_db: Database, world: World) -> tuple[Owners, Reconciler]:
    """Every table in one database; its outbox relayed; ROM's and the inventory's consumers running."""
    await sqlite_db.create_tables(SAGA_TABLES, RESOURCE_TABLES, SERVICE_STATE_VIEW)
    await sqlite_db.create_tables(OUTBOX_TABLES, INBOX_TABLES, PARKED_TABLES)
    owners = Owners(sqlite_db, sqlite_db)
    await owners.install()
    world.relay(sqlite_db, owners.outbox)
    await world.consume(owners)
    return owners, Reconciler(sqlite_db, OutboxSink(owners.outbox, "reconciliation"))


async def test_drift_is_detected_emitted_and_the_safe_cases_repaired_by_their_owners(
    sqlite_db: Database, world: World
) -> None:
    owners, job = await one_schema(sqlite_db, world)
    await drift(owners, sqlite_db)

    found = await job.run()

    assert_first_pass(found)
    assert (await outbox_types(sqlite_db, SYSTEM_EVENTS.name)).count(DRIFT_EVENT) == 4
    await repaired_by_owners(owners)
    assert RECLAIM_RESOURCES.succeeded in await outbox_types(sqlite_db, RESOURCE_EVENTS)
    assert TERMINATE_SERVICES.succeeded in await outbox_types(sqlite_db, SERVICE_EVENTS)

    again = await job.run()  # repaired drift is gone; what needs an operator is reported again
    assert {d.kind for d in again} == {MISSING_INVENTORY, ORPHANED_ALLOCATION}
    assert all(not d.repaired for d in again)


async def test_a_dry_run_reports_and_sends_nothing(sqlite_db: Database, world: World) -> None:
    owners, job = await one_schema(sqlite_db, world)
    await drift(owners, sqlite_db)
    found = await job.run(repair=False)
    assert {(d.kind, d.repaired) for d in found} == {
        (ORPHANED_ALLOCATION, False),
        (ACTIVE_SERVICE_OF_FAILED_ORDER, False),
        (MISSING_INVENTORY, False),
    }
    for kind in (RECLAIM_RESOURCES, TERMINATE_SERVICES):
        assert await outbox_types(sqlite_db, kind.topic) == []
    assert await held(sqlite_db) == 3


def repair_command(kind_name: str, payload: Mapping[str, Any]) -> Envelope:
    return Envelope(event_type=kind_name, payload=payload, entity_key="S-1", category=Category.COMMAND)


async def test_the_owners_apply_a_repair_once_and_refuse_a_malformed_one(sqlite_db: Database) -> None:
    await sqlite_db.create_tables(RESOURCE_TABLES, OUTBOX_TABLES)
    owners = Owners(sqlite_db, sqlite_db)
    await owners.install()
    async with sqlite_db.transaction() as tx:
        claim = await owners.pools.allocate_any(tx, "vlan", "RO-1", "S-1/allocate/action/vlan")
        await owners.services.upsert(tx, {"id": "SVC-1", "name": "left active", "state": "active", **SPEC})
    reclaim = {
        "requestId": "S-1/reconcile/claims",
        "claims": [{"pool": claim.pool, "requestId": claim.request_id}],
    }
    terminate = {"requestId": "S-1/reconcile/services", "services": ["SVC-1"]}
    replies = []
    for _ in range(2):  # a redelivery, or the next pass before the first repair was applied
        async with sqlite_db.transaction() as tx:
            replies.append(await owners.rom.handle(tx, repair_command(RECLAIM_RESOURCES.name, reclaim)))
            replies.append(
                await owners.inventory.handle(tx, repair_command(TERMINATE_SERVICES.name, terminate))
            )
    assert [r.event_type for r in replies] == [RECLAIM_RESOURCES.succeeded, TERMINATE_SERVICES.succeeded] * 2
    assert [len(r.payload["released"]) for r in replies[::2]] == [1, 0]
    assert [len(r.payload["services"]) for r in replies[1::2]] == [1, 0]
    assert await held(sqlite_db) == 0
    assert await service_state(owners, "SVC-1") == "terminated"

    async with sqlite_db.transaction() as tx:
        unknown_pool = {**reclaim, "claims": [{"pool": "no-such-pool", "requestId": "x"}]}
        refused = [
            await owners.rom.handle(tx, repair_command(RECLAIM_RESOURCES.name, {"requestId": "r"})),
            await owners.rom.handle(tx, repair_command(RECLAIM_RESOURCES.name, unknown_pool)),
            await owners.inventory.handle(tx, repair_command(TERMINATE_SERVICES.name, {"requestId": "r"})),
            await owners.inventory.handle(
                tx, repair_command(TERMINATE_SERVICES.name, {"services": ["SVC-1"]})
            ),
        ]
    assert [r.event_type for r in refused] == [RECLAIM_RESOURCES.failed] * 2 + [TERMINATE_SERVICES.failed] * 2
    assert all(r.payload["permanent"] is True for r in refused)


def test_soms_reply_consumer_never_takes_reconciliations_replies() -> None:
    # The saga engine would ignore them anyway (no saga command caused them); they are not even
    # delivered to it: SOM's reply consumer filters on the saga commands' reply types.
    for kind in (RECLAIM_RESOURCES, TERMINATE_SERVICES):
        assert {kind.succeeded, kind.failed}.isdisjoint(REPLY_TYPES)


def test_the_service_state_view_reads_the_tmf638_collection() -> None:
    collection = f"{SERVICE_INVENTORY_API.name}/{SERVICE_INVENTORY_API.resources[0].name}"
    for kind in ("sqlite", "postgresql"):
        assert f"collection = '{collection}'" in SERVICE_STATE_VIEW.ddl(kind)[0]


# A split cluster ----------------------------------------------------------------------------------


async def test_in_a_split_cluster_operations_reads_through_views_and_the_owners_repair(
    tmp_path: Path, postgres_url: str, world: World
) -> None:
    plan = plan_cluster(tmp_path, database_url=postgres_url, bus_url="kafka://127.0.0.1:9092", instances=1)
    environments = await provision(plan)
    schemas = schema_map(plan)

    def database(component: str) -> PostgresDatabase:
        url = environments[component]["STROWGER_DATABASE_URL"]
        return PostgresDatabase(url, schema=schemas[component], borrowed=borrowed_names(component, schemas))

    try:
        async with (
            database("operations") as operations,
            database("service-ordering") as som,
            database("resource-ordering") as rom,
            database("inventory") as inventory,
        ):
            owners = Owners(rom, inventory)  # each owner writes its own schema only
            await owners.install()
            await drift(owners, som)

            found = await Reconciler(operations, OutboxSink(Outbox(), "operations")).run()

            assert_first_pass(found)  # operations saw SOM's sagas, ROM's claims, the services' states
            for statement in (
                "UPDATE resource_pool_slot SET request_id = NULL",
                "UPDATE sagas SET status = 'failed'",
                "DELETE FROM service_state",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    async with operations.transaction() as tx:  # read-only: repairs are the owners'
                        await tx.execute(statement)
            assert len(await outbox_types(operations, RECLAIM_RESOURCES.topic)) == 1
            world.relay(operations, Outbox())  # operations' outbox (its commands) to the bus
            await world.consume(owners)
            await repaired_by_owners(owners)
    finally:
        await deprovision(plan)
