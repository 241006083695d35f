"""The whole platform on real infrastructure: PostgreSQL + Kafka, and PostgreSQL + RabbitMQ.

Each test gets a throwaway PostgreSQL schema (``database_schema``) and a bus
namespace of its own (``bus_namespace``: every topic and consumer group
prefixed), so runs on the shared brokers never see each other's events
(docs/verification.md explains the choice). The saga fault matrix of
``strowger verify sagas`` runs on them: a happy path per sample product, a
failure at each step (compensated), a compensation failure at each step
(quarantine, operator retry, compensated), then every invariant. Then a
product order cancelled while its activation is in flight, and the
orchestrator (SOM, its own process) killed with SIGKILL mid-saga and started
again: the saga resumes and nothing happens twice.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.bus.namespace import Namespace
from strowger.bus.rabbitmq import RabbitBus
from strowger.cluster.plan import ProcessSpec, free_port, plan_cluster
from strowger.cluster.supervisor import Cluster
from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.charging import BillingLedger
from strowger.components.service_ordering.service import service_order_id_for
from strowger.events.topics import ALL_TOPICS
from strowger.security import SecuritySettings, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.postgres import PostgresDatabase
from strowger.verify.run import verify_sagas
from tests.conftest import delete_declared_topics

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    database = PostgresDatabase(postgres_url, schema=name)
    await database.open()
    async with database.transaction() as tx:
        await tx.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await database.close()


def platform_settings(database_url: str, bus_url: str, schema: str) -> Settings:
    return Settings(
        database_url=database_url,
        database_schema=schema,
        bus_url=bus_url,
        bus_namespace=f"t{uuid.uuid4().hex[:10]}",
        outbox_poll_interval=0.1,
    )


async def assert_matrix_holds(settings: Settings, *, step_timeout: float = 4.0) -> None:
    report = await verify_sagas(settings, timeout=step_timeout, budget=240.0)
    problems = [
        f"{outcome.injection.label}: {problem}"
        for outcome, verdict in zip(report.outcomes, report.verdicts, strict=True)
        for problem in [*outcome.problems, *(p for found in verdict.problems.values() for p in found)]
    ]
    assert not problems, problems
    assert len(report.outcomes) == 12
    assert sum(outcome.quarantined for outcome in report.outcomes) == 3


async def test_fault_matrix_on_postgresql_and_kafka(postgres_url: str, kafka_url: str, schema: str) -> None:
    await assert_matrix_holds(platform_settings(postgres_url, kafka_url, schema))


async def test_fault_matrix_on_postgresql_and_rabbitmq(
    postgres_url: str, rabbitmq_url: str, schema: str
) -> None:
    # RabbitMQ members take a few seconds to win their partition leases: longer step timeouts.
    settings = platform_settings(postgres_url, rabbitmq_url, schema)
    try:
        await assert_matrix_holds(settings, step_timeout=12.0)
    finally:  # the broker keeps the run's streams (54) and group queues unless they are deleted
        rabbit = RabbitBus(rabbitmq_url)
        await rabbit.start()
        try:
            namespace = Namespace(settings.bus_namespace)
            declared = [replace(topic, name=namespace.outward(topic.name)) for topic in ALL_TOPICS]
            await rabbit.ensure_topics(declared)  # as the platform declared them (same arguments)
            groups = [namespace.outward(runner.consumer.name) for runner in bootstrap(settings).runners]
            await delete_declared_topics(rabbit, groups)
        finally:
            await rabbit.stop()


# --- cancellation in flight, and an orchestrator killed mid-saga ------------------------------------------
#
# The whole platform on PostgreSQL + Kafka, driven over TMF622 as a client would. The network answers
# activations after a few seconds, so each order is caught with its ActivateService in flight.

ADMIN_KEY = "stw_test-real-infra-admin"
HEADERS = {"X-API-Key": ADMIN_KEY}
ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"
CANCELS = "/tmf-api/productOrderingManagement/v4/cancelProductOrder"
NETWORK_LATENCY_MS = 3000
ORDER_TIMEOUT = 45.0  # seconds for an order to settle; a healthy run takes a few


def admin_security() -> SecuritySettings:
    entry = ApiKeyEntry(name="admin", sha256=hash_api_key(ADMIN_KEY), scopes=("admin",))
    return SecuritySettings(api_keys=(entry,), api_keys_file=None)


@asynccontextmanager
async def served(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(platform, admin_security())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://strowger", headers=HEADERS, timeout=30
        ) as client:
            yield client


async def place_order(client: httpx.AsyncClient, offering: str = "PO-FIBRE-500") -> str:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": offering}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(ORDERS, json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = ORDER_TIMEOUT) -> Any:
    """Poll ``probe`` until it answers something truthy; fail naming ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                answer = await probe()
                if answer:
                    return answer
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"gave up after {timeout:.0f}s waiting for {what}")


async def order_in(client: httpx.AsyncClient, order_id: str, states: set[str]) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        order: dict[str, Any] = (await client.get(f"{ORDERS}/{order_id}")).json()
        return order if order.get("state") in states else None

    found: dict[str, Any] = await until(settled, f"product order {order_id} to be one of {sorted(states)}")
    return found


async def saga_of(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/sagas/{service_order_id_for(order_id)}")
    return dict(response.json()) if response.status_code == 200 else {}


async def activation_in_flight(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    async def in_flight() -> dict[str, Any] | None:
        saga = await saga_of(client, order_id)
        steps = {step["name"]: step["status"] for step in saga.get("steps", [])}
        return saga if steps.get("activate") == "in_flight" else None

    found: dict[str, Any] = await until(in_flight, f"the activation of {order_id} to be in flight")
    return found


async def count(database: Database, sql: str, *params: Any) -> int:
    row = await database.fetchone(sql, params)
    return int(row[0]) if row else 0


def ledger_of(platform: Platform) -> BillingLedger:
    return BillingLedger(platform.database, CustomerBilling(platform.database, platform.sink("test")))


async def test_a_product_order_cancelled_in_flight_is_compensated_on_postgresql_and_kafka(
    postgres_url: str, kafka_url: str, schema: str
) -> None:
    platform = bootstrap(platform_settings(postgres_url, kafka_url, schema))
    async with served(platform) as client:
        slow = await client.put("/activation/faults", json={"latency_ms": NETWORK_LATENCY_MS})
        assert slow.status_code == 200, slow.text
        order_id = await place_order(client)
        await activation_in_flight(client, order_id)
        assert await count(
            platform.database, "SELECT COUNT(*) FROM resource_pool_slot WHERE holder IS NOT NULL"
        )

        task = await client.post(
            CANCELS, json={"productOrder": {"id": order_id}, "cancellationReason": "changed my mind"}
        )
        assert task.status_code == 201, task.text
        order = await order_in(client, order_id, {"cancelled", "completed", "failed"})

        assert order["state"] == "cancelled", order
        task_after = (await client.get(f"{CANCELS}/{task.json()['id']}")).json()
        assert task_after["state"] == "done", task_after
        saga = await saga_of(client, order_id)
        assert saga["status"] == "cancelled"
        # The activation answered after the cancel: it succeeded, so it was undone, then the allocation.
        assert {step["name"]: step["status"] for step in saga["steps"]} == {
            "allocate": "compensated",
            "activate": "compensated",
            "recordInventory": "pending",
        }
        service_order = (await client.get(f"/tmf-api/serviceOrdering/v4/serviceOrder/{saga['id']}")).json()
        assert service_order["state"] == "cancelled"

        async def released() -> bool:
            held = "SELECT COUNT(*) FROM resource_pool_slot WHERE holder IS NOT NULL"
            return await count(platform.database, held) == 0

        await until(released, "every pool value to be released")  # the last reply trails the saga
        network = (await client.get(f"/activation/config/{saga['id']}")).json()
        assert network and {config["state"] for config in network} == {"rolledBack"}
        services = (await client.get("/tmf-api/serviceInventory/v4/service")).json()
        assert not [service for service in services if service.get("state") == "active"]
        assert await ledger_of(platform).charges_minus_credits(order_id) == 0


SOM = "service-ordering"
SOM_CONSUMERS = ("service-ordering", "service-ordering-replies")


def without_the_orchestrator(platform: Platform) -> Platform:
    """Every component but SOM in this process: SOM runs in one of its own, to be killed."""
    platform.runners = [runner for runner in platform.runners if runner.name not in SOM_CONSUMERS]
    platform.tasks = [
        (name, task) for name, task in platform.tasks if not name.removeprefix("consumer:").startswith(SOM)
    ]
    assert not [name for name, _ in platform.tasks if SOM in name]
    return platform


def orchestrator_process(root: Path, settings: Settings, postgres_url: str, kafka_url: str) -> Cluster:
    """A one-process cluster, ``strowger run service-ordering``, on the same schema and bus namespace."""
    plan = plan_cluster(root, database_url=postgres_url, bus_url=kafka_url, instances=1)
    som = ProcessSpec(SOM, SOM, 1, free_port())
    assert settings.database_schema and settings.bus_namespace
    return Cluster(
        replace(
            plan,
            database_schema=settings.database_schema,
            split_database=False,  # it shares the test's one schema with the in-process platform
            bus_namespace=settings.bus_namespace,
            processes=(som,),
            component_environment={SOM: {"STROWGER_SAMPLE_CATALOG": "false"}},
        )
    )


async def test_an_orchestrator_killed_mid_saga_resumes_it_and_does_nothing_twice(
    postgres_url: str, kafka_url: str, schema: str, tmp_path: Path
) -> None:
    settings = platform_settings(postgres_url, kafka_url, schema)
    platform = without_the_orchestrator(bootstrap(settings))
    async with served(platform) as client:
        slow = await client.put("/activation/faults", json={"latency_ms": NETWORK_LATENCY_MS})
        assert slow.status_code == 200, slow.text
        orchestrator = orchestrator_process(tmp_path, settings, postgres_url, kafka_url)
        try:
            await orchestrator.up()
            order_id = await place_order(client)
            saga = await activation_in_flight(client, order_id)

            orchestrator.kill(SOM, signal.SIGKILL)  # no drain, no goodbye: mid-saga
            assert not orchestrator.alive(SOM)
            await asyncio.sleep(NETWORK_LATENCY_MS / 1000)  # the network answers while SOM is down
            assert (await saga_of(client, order_id))["steps"][1]["status"] == "in_flight"
            orchestrator.start(SOM)  # a new process: everything it knows is in the database

            order = await order_in(client, order_id, {"completed", "failed", "cancelled"})
        finally:
            await orchestrator.stop()

        assert order["state"] == "completed", order
        saga = await saga_of(client, order_id)
        assert saga["status"] == "completed"
        assert [step["status"] for step in saga["steps"]] == ["succeeded"] * 3
        assert [step["attempts"] for step in saga["steps"]] == [1, 1, 1]  # no command sent twice
        database = platform.database
        sent = "SELECT COUNT(*) FROM saga_commands WHERE saga_id = ?"
        assert await count(database, sent, saga["id"]) == 3
        allocated = "SELECT COUNT(*) FROM resource_pool_slot WHERE holder IS NOT NULL"
        resources = "SELECT COUNT(*) FROM tmf_resource WHERE collection = ?"
        held = await count(database, allocated)
        assert held > 0
        assert await count(database, resources, "resourceInventoryManagement/resource") == held
        assert await count(database, "SELECT COUNT(*) FROM activation_request") == 1
        network = (await client.get(f"/activation/config/{saga['id']}")).json()
        assert network and {config["state"] for config in network} == {"configured"}
        # The inventory records the product from the order's completion event, a hop later.
        await until(
            lambda: count(database, resources, "productInventory/product"), "the product to be recorded"
        )
        assert await count(database, resources, "productInventory/product") == 1

        async def charged() -> int:
            return await ledger_of(platform).charges_minus_credits(order_id)

        first_charge = await until(charged, "billing to charge the completed order")
        await asyncio.sleep(1.0)  # a second charge would come as fast as the first did
        assert await charged() == first_charge
