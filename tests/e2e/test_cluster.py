"""A real multi-process cluster on PostgreSQL + Kafka: orders complete, also after a SOM is killed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from strowger.cluster.plan import plan_cluster
from strowger.cluster.provision import schema_of
from strowger.cluster.routing import ClusterTransport
from strowger.cluster.supervisor import Cluster
from strowger.components.database import parked_id_range

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]
ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"
PRODUCTS = "/tmf-api/productInventory/v4/product"


@pytest.fixture
async def cluster(tmp_path: Path, postgres_url: str, kafka_url: str) -> AsyncIterator[Cluster]:
    # SOM runs twice, so killing one instance leaves its consumer group a live member.
    plan = plan_cluster(tmp_path, database_url=postgres_url, bus_url=kafka_url, instances=1)
    som = next(spec for spec in plan.processes if spec.component == "service-ordering")
    plan = plan_with_second(plan, som.name)
    running = Cluster(plan)
    try:
        await running.up()
        yield running
    finally:
        await running.down()
    left = await asyncio.to_thread(kafka_leftovers, kafka_url, plan.bus_namespace)
    for _ in range(30):  # a deleted topic may linger in the metadata for a moment
        if left == ([], []):
            break
        await asyncio.sleep(1)
        left = await asyncio.to_thread(kafka_leftovers, kafka_url, plan.bus_namespace)
    assert left == ([], [])


def kafka_leftovers(kafka_url: str, namespace: str) -> tuple[list[str], list[str]]:
    """The topics and consumer groups of ``namespace`` still on the broker after ``down``."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_url.split("://", 1)[1]})
    prefix = f"{namespace}."
    topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
    groups = admin.list_consumer_groups(request_timeout=10).result().valid
    return topics, [group.group_id for group in groups if group.group_id.startswith(prefix)]


def plan_with_second(plan, name):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from strowger.cluster.plan import ProcessSpec, free_port

    spec = plan.process(name)
    second = ProcessSpec(f"{spec.component}-2", spec.component, 2, free_port())
    return replace(plan, processes=(*plan.processes, second))


async def place(client: httpx.AsyncClient) -> str:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(ORDERS, json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def state_of(client: httpx.AsyncClient, order_id: str, timeout: float = 120.0) -> str:
    state = ""
    async with asyncio.timeout(timeout):
        while state not in ("completed", "failed"):
            state = (await client.get(f"{ORDERS}/{order_id}")).json().get("state", "")
            await asyncio.sleep(0.5)
    return state


async def test_orders_complete_across_processes_and_survive_a_killed_som(cluster: Cluster) -> None:
    await every_process_reports_ready(cluster)
    transport = ClusterTransport(cluster.plan, cluster.alive)
    headers = {"X-API-Key": cluster.admin_key}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://c", headers=headers, timeout=30
    ) as client:
        before = [await place(client) for _ in range(3)]
        assert [await state_of(client, order) for order in before] == ["completed"] * 3
        await products_recorded(client, before)  # by the inventory component, from the order events
        await ordering_follows_the_sagas(cluster, len(before))  # through its view of SOM's saga log
        await each_component_reads_only_its_own_tables(cluster)
        # operations reads every component's dead letters and traces through the directory's views
        assert (await client.get("/dlq")).json() == []
        trace = await client.get(f"/trace/{before[0]}")
        assert trace.status_code == 200 and trace.json()["id"] == before[0], trace.text
        await operations_repairs_other_components_dead_letters(cluster, client)
        await operations_sees_every_outbox_and_the_sagas(client)
        await the_gateway_is_the_one_entry_point(cluster, headers)

        cluster.kill("service-ordering", signal.SIGKILL)
        assert not cluster.alive("service-ordering")
        after = [await place(client) for _ in range(3)]
        assert [await state_of(client, order) for order in after] == ["completed"] * 3


async def every_process_reports_ready(cluster: Cluster, timeout: float = 60.0) -> None:
    # up() saw each process ready once; status() probes again, and a process busy catching up
    # right after start (12 of them on 2 cores) may miss one probe, so poll rather than sample.
    laggards: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        laggards = [status.name for status in await cluster.status() if not status.ready]
        if not laggards:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"not ready {timeout:.0f}s after up(): {laggards}")


async def products_recorded(client: httpx.AsyncClient, orders: list[str], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            listed = await client.get(PRODUCTS, params={"relatedParty.id": "CUST-1", "limit": 1000})
            recorded = {item["productOrderItem"][0]["productOrderId"] for item in listed.json()}
            if set(orders) <= recorded:
                return
            await asyncio.sleep(0.5)


async def ordering_follows_the_sagas(cluster: Cluster, completed: int, timeout: float = 60.0) -> None:
    overview = f'"{schema_of(cluster.plan, "ordering")}".saga_overview'
    count: object = None
    async with await psycopg.AsyncConnection.connect(cluster.plan.database_url, autocommit=True) as admin:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cursor = await admin.execute(f"SELECT count(*) FROM {overview} WHERE status = 'completed'")  # noqa: S608
            count = (await cursor.fetchone() or [None])[0]
            if isinstance(count, int) and count >= completed:
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"ordering's saga overview shows {count} completed sagas, not {completed}")


async def each_component_reads_only_its_own_tables(cluster: Cluster) -> None:
    """Each process connects as its component's role: another component's table is out of reach."""
    plan = cluster.plan
    ordering_url = plan.component_environment["ordering"]["STROWGER_DATABASE_URL"]
    billing_table = f'"{schema_of(plan, "billing")}".billing_charge'
    async with await psycopg.AsyncConnection.connect(ordering_url, autocommit=True) as ordering:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await ordering.execute(f"SELECT count(*) FROM {billing_table}")  # noqa: S608
    async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as admin:
        charged = await (await admin.execute(f"SELECT count(*) FROM {billing_table}")).fetchone()  # noqa: S608
    assert charged is not None and charged[0] > 0


async def operations_repairs_other_components_dead_letters(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    """A dead letter of billing, replayed through operations' /dlq, is settled by billing's own
    runtime (its inbox had applied the event: replay is idempotent); one of ROM's is discarded."""
    plan = cluster.plan
    billing, rom = schema_of(plan, "billing"), schema_of(plan, "resource-ordering")
    async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as admin:
        message = await an_applied_event(admin, schema_of(plan, "ordering"), billing, "billing")
        replayed = await park_dead(admin, billing, "billing", message, message["eventId"])
        discarded = await park_dead(admin, rom, "rom", message, "e2e-poison")
        assert parked_id_range("billing")[0] <= replayed <= parked_id_range("billing")[1]
        assert parked_id_range("resource-ordering")[0] <= discarded <= parked_id_range("resource-ordering")[1]
        listed = {letter["id"]: letter["consumer"] for letter in (await client.get("/dlq")).json()}
        assert listed == {replayed: "billing", discarded: "rom"}
        answer = await client.post("/dlq/replay", json={"ids": [replayed]})
        assert answer.json()["ids"] == [replayed], answer.text
        assert (await client.post(f"/dlq/{discarded}/discard")).status_code == 200
        async with asyncio.timeout(30):
            while (shown := await client.get(f"/dlq/{replayed}")).status_code != 404:
                assert shown.json()["status"] in ("dead", "retrying"), shown.text
                await asyncio.sleep(0.5)
        left = await admin.execute(f'SELECT count(*) FROM "{rom}".parked')  # noqa: S608
        assert await left.fetchone() == (0,)


async def an_applied_event(
    admin: psycopg.AsyncConnection[object], producer: str, schema: str, consumer: str
) -> dict[str, object]:
    """An event of ``producer``'s outbox that ``consumer`` (in ``schema``) has applied."""
    cursor = await admin.execute(
        f'SELECT o.topic, o.key, o.headers, o.value, o.partition FROM "{producer}".outbox o '  # noqa: S608
        f'JOIN "{schema}".inbox i ON i.event_id = o.headers::jsonb ->> %s AND i.consumer = %s LIMIT 1',
        ("eventId", consumer),
    )
    row = await cursor.fetchone()
    assert row is not None, f"{consumer} applied no event of {producer}"
    topic, key, headers, value, partition = row
    return {"topic": topic, "key": key, "headers": headers, "value": value, "partition": partition,
            **orjson.loads(headers)}  # fmt: skip


async def park_dead(
    admin: psycopg.AsyncConnection[object],
    schema: str,
    consumer: str,
    message: dict[str, object],
    event_id: object,
) -> int:
    """Park ``message`` dead for ``consumer`` in its own schema, as its runtime would; its id."""
    columns = ("key", "eventType", "topic", "partition", "key", "headers", "value")
    entity, event_type, topic, partition, key, headers, value = (message[name] for name in columns)
    values = (consumer, entity, event_id, event_type, topic, partition, key, headers, value, time.time())
    cursor = await admin.execute(
        f'INSERT INTO "{schema}".parked (consumer, entity_key, event_id, event_type, topic, partition, '  # noqa: S608
        '"offset", key, headers, value, delivered_at, status, attempts, error_type, created_at) '
        "VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, 'dead', 3, 'KeyError', 0) RETURNING id",
        values,
    )
    created = await cursor.fetchone()
    assert created is not None
    return int(created[0])


async def operations_sees_every_outbox_and_the_sagas(client: httpx.AsyncClient) -> None:
    overview = (await client.get("/dashboard/api/overview")).json()
    outboxes = {entry["component"] for entry in overview["outbox"]["components"]}
    assert {"ordering", "service-ordering", "billing", "operations"} <= outboxes, overview["outbox"]
    started = sum(saga["started"] for saga in overview["sagas"]["types"])
    assert started >= 3, overview["sagas"]  # SOM's sagas, not operations' empty copy


async def the_gateway_is_the_one_entry_point(cluster: Cluster, headers: dict[str, str]) -> None:
    """One port for every API: the dashboard (operations) and its saga actions (service-ordering)."""
    assert cluster.gateway_url is not None
    async with httpx.AsyncClient(base_url=cluster.gateway_url, headers=headers, timeout=30) as gateway:
        sagas = await gateway.get("/sagas")  # answered 404 on operations' own port
        assert sagas.status_code == 200 and len(sagas.json()) >= 3, sagas.text
        detail = await gateway.get(f"/sagas/{sagas.json()[0]['id']}")
        assert detail.status_code == 200, detail.text
        assert (await gateway.get("/dashboard")).status_code == 200
        order_id = await place(gateway)
        shown = await gateway.get(f"{ORDERS}/{order_id}")
        assert shown.status_code == 200 and shown.json()["id"] == order_id, shown.text
        unknown = await gateway.get("/tmf-api/nothingHere/v4/thing")
        assert unknown.status_code == 404 and unknown.json()["@type"] == "Error"
        anonymous = await gateway.get("/sagas", headers={"X-API-Key": ""})
        assert anonymous.status_code == 401, anonymous.text  # the key, not the gateway, let the others in
