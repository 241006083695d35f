# ruff: noqa: S608  (SQL built from the test's own schema and table names)
"""Each cluster component in its own schema, as its own role: what it may read, what it may not.

Runs the supervisor's provisioning against the real PostgreSQL (no process started); the
running cluster is tests/e2e/test_cluster.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from strowger.cluster.plan import ClusterPlan, plan_cluster
from strowger.cluster.provision import (
    ProvisionError,
    deprovision,
    provision,
    role_of,
    schema_map,
    schema_of,
)
from strowger.components.database import DIRECTORY, borrowed_by, borrowed_names
from strowger.store.outbox_schemas import pending_probe
from strowger.store.postgres import PostgresDatabase, ddl_target

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


def test_operations_borrows_from_the_directory_and_ordering_from_its_owners() -> None:
    schemas = {DIRECTORY: "d", **{name: f"s_{name}" for name in ("operations", "ordering", "catalog")}}
    schemas.update({"service-ordering": "s_som", "hub-delivery": "s_hub"})
    assert {item.source_schema for item in borrowed_by("operations", schemas)} == {"d"}
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
