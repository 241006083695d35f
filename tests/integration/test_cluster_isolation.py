# ruff: noqa: S608  (SQL built from the test's own schema and table names)
"""Each cluster component in its own schema, as its own role: what it may read, what it may not.

Runs the supervisor's provisioning against the real PostgreSQL (no process started); the
running cluster is tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from strowger.bus.port import Delivery
from strowger.cluster.plan import ClusterPlan, plan_cluster
from strowger.cluster.provision import (
    ProvisionError,
    deprovision,
    provision,
    role_of,
    schema_map,
    schema_of,
)
from strowger.commands.dlq import dlq_app
from strowger.components.database import DIRECTORY, borrowed_by, borrowed_names, parked_homes, parked_id_range
from strowger.components.registry import COMPONENTS
from strowger.events.envelope import Message
from strowger.ops.dashboard.data import outbox_backlog, saga_health
from strowger.ops.dlq_api import dead_letter_queue_for
from strowger.ops.metrics import Metrics
from strowger.ops.sampler import PlatformSampler
from strowger.projections.sagas import SagaLogSource
from strowger.saga.model import SagaStatus
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.deadletters import DeadLetterFilter, Failure, ParkingLot, ReplayReport, Status
from strowger.store.outbox_schemas import pending_probe
from strowger.store.postgres import PostgresDatabase, ddl_target, existence_check
from strowger.tmf.delivery import queue_name

pytestmark = pytest.mark.integration


@pytest.fixture
async def provisioned(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[ClusterPlan, dict[str, str]]]:
    plan = plan_cluster(tmp_path, database_url=postgres_url, bus_url="kafka://127.0.0.1:9092", instances=1)
    environments = await provision(plan)
    try:
        yield plan, {component: env["STROWGER_DATABASE_URL"] for component, env in environments.items()}
    finally:
        await deprovision(plan)


async def select(url: str, relation: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(f"SELECT * FROM {relation} LIMIT 1")
        return await cursor.fetchall()


def table(plan: ClusterPlan, component: str, name: str) -> str:
    return f'"{schema_of(plan, component)}".{name}'


async def test_a_component_cannot_read_another_components_tables(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    for reader, owner, name in [
        ("billing", "ordering", "outbox"),
        ("ordering", "billing", "parked"),
        ("ordering", "catalog", "tmf_resource"),  # the catalog view only, not the whole table
        ("relay", "ordering", "parked"),
        ("operations", "billing", "outbox"),
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await select(urls[reader], table(plan, owner, name))
    async with await psycopg.AsyncConnection.connect(urls["billing"], autocommit=True) as billing:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await billing.execute("CREATE TABLE public.strowger_isolation_probe (id INT)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await billing.execute(f'CREATE TABLE "{plan.database_schema}".probe (id INT)')


async def test_the_granted_crossings_work(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    assert await select(urls["ordering"], table(plan, "catalog", "catalog_resource")) == []
    assert await select(urls["ordering"], table(plan, "service-ordering", "saga_log")) == []
    assert await select(urls["billing"], table(plan, "operations", "schema_registry_subjects")) == []
    assert await select(urls["operations"], f'"{plan.database_schema}".parked') == []
    async with await psycopg.AsyncConnection.connect(urls["relay"], autocommit=True) as relay:
        for component in ("ordering", "billing", "hub-delivery"):
            await relay.execute(
                f"UPDATE {table(plan, component, 'outbox')} SET published_at = 0 WHERE id < 0"
            )
            await relay.execute(f"DELETE FROM {table(plan, component, 'inbox')} WHERE processed_at < 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await relay.execute(f"INSERT INTO {table(plan, 'ordering', 'inbox')} VALUES ('x', 'y', 0)")
    async with await psycopg.AsyncConnection.connect(urls["catalog"], autocommit=True) as catalog:
        await catalog.execute(
            f"INSERT INTO {table(plan, 'hub-delivery', 'tmf_hub_subscription')} "
            "VALUES ('productCatalogManagement', 's1', 'http://x', '', NULL, 'now')"
        )


async def test_each_process_works_in_its_own_schema_and_borrows_through_views(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    schemas = schema_map(plan)
    from strowger.components.billing.charging import BILLING_TABLES
    from strowger.saga.store import SAGA_TABLES
    from strowger.tmf.resources import RESOURCE_TABLES

    for component, table_sets in [
        ("billing", (RESOURCE_TABLES, BILLING_TABLES)),
        ("ordering", (SAGA_TABLES,)),
    ]:
        database = PostgresDatabase(
            urls[component], schema=schemas[component], borrowed=borrowed_names(component, schemas)
        )
        async with database:
            await database.create_tables(*table_sets)  # its own tables; the borrowed names are left alone
            kinds = dict(await database.fetchall(KINDS, (schemas[component],)))
            assert await database.fetchall("SELECT * FROM catalog_resource") == []
        assert kinds["catalog_resource"] == "v", component  # the catalog's, through the grant
    assert kinds["saga_log"] == "v" and kinds["saga_steps"] == "r"  # ordering: SOM's log, its own copy


async def test_ordering_tails_the_sagas_log_through_its_view_in_commit_order(provisioned) -> None:  # type: ignore[no-untyped-def]
    # The view is made before SOM's process starts: it must already have the log's tx_id column.
    plan, urls = provisioned
    async with component_database(plan, urls, "service-ordering") as som:
        await add_saga(som, "S-1", SagaStatus.RUNNING)
        async with som.transaction() as tx:
            await tx.execute(
                "INSERT INTO saga_log (saga_id, at, step, before_status, after_status, reason) "
                "VALUES ('S-1', now(), 'activate', 'pending', 'in_flight', '')"
            )
    async with component_database(plan, urls, "ordering") as ordering:
        source = SagaLogSource(ordering)
        head = await source.head()
        events = await source.read(0, 10)
    assert [(event.stream_id, event.payload["after"]) for event in events] == [("S-1", "in_flight")]
    assert events[-1].position == head > 0


KINDS = (
    "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = ?"
)


async def test_teardown_drops_every_schema_and_role_also_after_a_failed_start(
    tmp_path: Path, postgres_url: str
) -> None:
    plan = plan_cluster(tmp_path, database_url=postgres_url, bus_url="kafka://127.0.0.1:9092", instances=1)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f'CREATE ROLE "{role_of(plan, "billing")}"')  # provisioning fails halfway
        with pytest.raises(ProvisionError) as failed:
            await provision(plan)
        assert "strowger:***@" in str(failed.value) or "***" in str(failed.value)
        assert await leftovers(admin, plan) == (0, 0)
        await provision(plan)
        assert await leftovers(admin, plan) == (len(schema_map(plan)), len(schema_map(plan)) - 1)
        await deprovision(plan)
        assert await leftovers(admin, plan) == (0, 0)


async def leftovers(admin: psycopg.AsyncConnection[object], plan: ClusterPlan) -> tuple[int, int]:
    prefix = plan.database_schema
    schemas = await (
        await admin.execute("SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,))
    ).fetchone()
    roles = await (
        await admin.execute("SELECT count(*) FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,))
    ).fetchone()
    assert schemas is not None and roles is not None
    return int(schemas[0]), int(roles[0])


def test_ddl_targets_name_the_table_a_statement_touches() -> None:
    assert ddl_target("CREATE TABLE IF NOT EXISTS saga_log (id INT)") == "saga_log"
    assert ddl_target("CREATE INDEX IF NOT EXISTS saga_log_tx ON saga_log (tx_id, id)") == "saga_log"
    assert ddl_target("CREATE UNIQUE INDEX IF NOT EXISTS x ON sagas (a)") == "sagas"
    assert ddl_target("ALTER TABLE saga_log ADD COLUMN IF NOT EXISTS tx_id xid8") == "saga_log"
    assert ddl_target("CREATE OR REPLACE VIEW catalog_resource AS SELECT 1") == "catalog_resource"
    assert ddl_target("SELECT 1") is None
    # What provisioning and start-up look up before running a statement (a live table stays unlocked).
    added = existence_check("ALTER TABLE saga_log ADD COLUMN IF NOT EXISTS tx_id xid8")
    assert added is not None and added[1] == ("saga_log", "tx_id")
    index = existence_check("CREATE INDEX IF NOT EXISTS saga_log_tx ON saga_log (tx_id, id)")
    assert index is not None and index[1] == ("saga_log_tx",)
    assert existence_check("ALTER TABLE saga_log DROP COLUMN reason") is None


def test_operations_borrows_from_the_directory_and_ordering_from_its_owners() -> None:
    schemas = {DIRECTORY: "d", **{name: f"s_{name}" for name in ("operations", "ordering", "catalog")}}
    schemas.update({"service-ordering": "s_som", "hub-delivery": "s_hub"})
    operations = {item.name: item.source_schema for item in borrowed_by("operations", schemas)}
    assert operations.pop("sagas") == operations.pop("saga_steps") == operations.pop("saga_log") == "s_som"
    assert set(operations.values()) == {"d"} and "outbox_backlog" in operations
    ordering = {item.name: item.source_schema for item in borrowed_by("ordering", schemas)}
    assert ordering["catalog_resource"] == "s_catalog"
    assert ordering["saga_log"] == ordering["sagas"] == "s_som"
    assert ordering["tmf_hub_subscription"] == "s_hub"
    assert ordering["schema_registry_versions"] == "s_operations"


async def test_the_relays_watcher_finds_the_schemas_with_rows_waiting(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    schemas = [schema_of(plan, component) for component in ("ordering", "billing", "operations")]
    async with await psycopg.AsyncConnection.connect(urls["ordering"], autocommit=True) as ordering:
        await ordering.execute(
            "INSERT INTO outbox (topic, key, headers, value, partition, created_at) "
            "VALUES ('t', 'k', '{}', 'v', 0, 0)"
        )
    async with PostgresDatabase(urls["relay"]) as relay:  # the relay's role, no schema of its own set
        waiting = await relay.fetchall(pending_probe(schemas))
    assert waiting == [(schema_of(plan, "ordering"),)]


def component_database(plan: ClusterPlan, urls: dict[str, str], component: str) -> PostgresDatabase:
    """``component``'s database as its process opens it: its role, its schema, its borrowed views."""
    schemas = schema_map(plan)
    return PostgresDatabase(
        urls[component], schema=schemas[component], borrowed=borrowed_names(component, schemas)
    )


async def park_dead(database: Database, consumer: str, event_id: str, *, behind: bool = False) -> int:
    """A dead letter of ``consumer`` for entity E-1 (``behind``: a later event blocked behind it); its id."""
    message = Message("bss.test.events", "E-1", {"eventId": event_id, "eventType": "TestEvent"}, b"{}")
    delivery = Delivery(message, partition=0, offset=1, timestamp=datetime.now(UTC))
    status = Status.BLOCKED if behind else Status.DEAD
    failure = None if behind else Failure.of(ValueError("no such offering"))
    async with database.transaction() as tx:
        await ParkingLot().park(tx, consumer, delivery, entity_key="E-1", status=status, failure=failure)
    row = await database.fetchone(
        "SELECT id FROM parked WHERE consumer = ? AND event_id = ?", (consumer, event_id)
    )
    assert row is not None
    return int(row[0])


async def test_operations_replays_and_discards_each_components_dead_letters_in_its_schema(
    provisioned,
) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    async with (
        component_database(plan, urls, "billing") as billing,
        component_database(plan, urls, "resource-ordering") as rom,
        component_database(plan, urls, "operations") as operations,
    ):
        replayed = await park_dead(billing, "billing", "ev-1")
        discarded = await park_dead(rom, "rom", "ev-2")
        waiting = await park_dead(rom, "rom", "ev-3", behind=True)
        # Each component counts its ids in a range of its own: an id names one letter in the cluster.
        first, last = parked_id_range("billing")
        assert first <= replayed <= last
        first, last = parked_id_range("resource-ordering")
        assert first <= discarded < waiting <= last
        queue = dead_letter_queue_for(operations, operations_settings(plan))

        listed = {letter.id: letter.consumer for letter in await queue.find()}
        assert listed == {replayed: "billing", discarded: "rom"}
        report = await queue.replay(DeadLetterFilter(consumer="billing"))
        assert [letter.id for letter in report.replayed] == [replayed]
        assert await ParkingLot().due(billing, "billing") == [replayed]  # billing's runtime retries it now
        assert await queue.replay(DeadLetterFilter(consumer="billing")) == ReplayReport(False, [])

        assert (await queue.discard(discarded)) is not None
        assert await ParkingLot().due(rom, "rom") == [waiting]  # the next event of E-1 goes ahead
        assert await queue.discard(discarded) is None
        assert await queue.find() == []


async def test_operations_may_only_read_update_and_delete_the_dead_letters_of_components_with_consumers(
    provisioned,  # type: ignore[no-untyped-def]
) -> None:
    plan, urls = provisioned
    async with await psycopg.AsyncConnection.connect(urls["operations"], autocommit=True) as operations:
        await operations.execute(f"UPDATE {table(plan, 'billing', 'parked')} SET attempts = 0 WHERE id < 0")
        await operations.execute(f"DELETE FROM {table(plan, 'resource-ordering', 'parked')} WHERE id < 0")
        for statement in (
            f"INSERT INTO {table(plan, 'billing', 'parked')} (consumer) VALUES ('x')",
            f"SELECT * FROM {table(plan, 'billing', 'outbox')}",
            f"UPDATE {table(plan, 'catalog', 'parked')} SET attempts = 0 WHERE id < 0",  # no consumers
            f"UPDATE {table(plan, 'service-ordering', 'sagas')} SET version = 0 WHERE version < 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await operations.execute(statement)


async def test_operations_sees_every_components_outbox_backlog_and_the_sagas(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    async with component_database(plan, urls, "ordering") as ordering, ordering.transaction() as tx:
        await tx.execute(
            "INSERT INTO outbox (topic, key, headers, value, partition, created_at) "
            "VALUES ('bss.ordering.events', 'O-1', '{}', 'v', 0, ?)",
            (time.time() - 30,),
        )
    async with component_database(plan, urls, "service-ordering") as som:
        await add_saga(som, "S-1", SagaStatus.RUNNING)
        await add_saga(som, "S-2", SagaStatus.QUARANTINED)
    async with component_database(plan, urls, "operations") as operations:
        metrics = Metrics()
        # No runner: the sampler never asks the bus.
        sampler = PlatformSampler(operations, None, metrics, [], sagas=True, outbox_across_components=True)  # type: ignore[arg-type]
        inputs = await sampler.sample()
        assert metrics.outbox_backlog._value.get() == 1
        assert inputs.outbox_oldest_age_seconds is not None and inputs.outbox_oldest_age_seconds >= 29
        assert metrics.sagas_quarantined.labels("fulfilment")._value.get() == 1
        backlog = await outbox_backlog(operations, across_components=True, here="operations")
        assert backlog["backlog"] == 1
        assert {c["component"]: c["backlog"] for c in backlog["components"]}["ordering"] == 1
        health = await saga_health(operations)
        assert [t["started"] for t in health["types"]] == [2]
        assert [q["sagaId"] for q in health["quarantined"]] == ["S-2"]


async def add_saga(database: Database, saga_id: str, status: SagaStatus) -> None:
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO sagas (saga_id, saga_type, status, current_step, data, correlation_id, entity_key, "
            "lock_keys, reason, cancel_requested, started_at, updated_at, stuck_reported, version) "
            "VALUES (?, 'fulfilment', ?, 0, '{}', 'c', 'O-1', '[]', '', false, now(), now(), false, 1)",
            (saga_id, status.value),
        )
        await tx.execute(
            "INSERT INTO saga_steps (saga_id, step_index, name, status, attempts, compensation_attempts, "
            "timeouts, command_id, errors, result) "
            "VALUES (?, 0, 'activate', 'in_flight', 1, 0, 0, 'c1', '[]', '{}')",
            (saga_id,),
        )


def operations_settings(plan: ClusterPlan) -> Settings:
    schemas = schema_map(plan)
    return Settings(
        database_url="postgresql://unused/db",
        component="operations",
        database_schema=schemas["operations"],
        database_schemas=schemas,
    )


async def test_the_dlq_command_with_operations_settings_replays_in_the_owners_schema(provisioned) -> None:  # type: ignore[no-untyped-def]
    plan, urls = provisioned
    schemas = schema_map(plan)
    environment = {
        "STROWGER_DATABASE_URL": urls["operations"],
        "STROWGER_DATABASE_SCHEMA": schemas["operations"],
        "STROWGER_DATABASE_SCHEMAS": orjson.dumps(schemas).decode(),
        "STROWGER_COMPONENT": "operations",
    }
    async with component_database(plan, urls, "billing") as billing:
        letter = await park_dead(billing, "billing", "ev-cli")
        cli = CliRunner()
        listed = await asyncio.to_thread(cli.invoke, dlq_app, ["list"], env=environment)
        assert "1 dead letter(s)" in listed.output, listed.output
        replayed = await asyncio.to_thread(cli.invoke, dlq_app, ["replay", str(letter)], env=environment)
        assert replayed.exit_code == 0 and "replayed 1" in replayed.output, replayed.output
        assert await ParkingLot().due(billing, "billing") == [letter]


def test_parked_ids_ranges_are_disjoint_and_each_letter_has_one_home() -> None:
    ranges = sorted(parked_id_range(component.name) for component in COMPONENTS)
    assert all(last < following for (_, last), (following, _) in itertools.pairwise(ranges))
    assert ranges[0][0] > 0 and ranges[-1][1] < 2**63  # BIGSERIAL
    home_of = parked_homes({DIRECTORY: "d", "resource-ordering": "s_rom", "billing": "s_billing"})
    assert home_of("rom") == '"s_rom".parked'
    assert home_of("billing") == '"s_billing".parked'
    assert home_of("analytics") is None  # its component is not in this cluster
    assert home_of("no-such-group") is None
    hubs = parked_homes({DIRECTORY: "d", "hub-delivery": "s_hub"})
    assert hubs(queue_name("productOrderingManagement", "sub-1")) == '"s_hub".parked'  # webhook deliveries
