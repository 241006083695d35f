"""A real multi-process cluster on PostgreSQL + Kafka: orders complete, also after a SOM is killed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from strowger.cluster.plan import plan_cluster
from strowger.cluster.routing import ClusterTransport
from strowger.cluster.supervisor import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]
ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"


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
    statuses = await cluster.status()
    assert all(status.ready for status in statuses), statuses
    transport = ClusterTransport(cluster.plan, cluster.alive)
    headers = {"X-API-Key": cluster.admin_key}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://c", headers=headers, timeout=30
    ) as client:
        before = [await place(client) for _ in range(3)]
        assert [await state_of(client, order) for order in before] == ["completed"] * 3

        cluster.kill("service-ordering", signal.SIGKILL)
        assert not cluster.alive("service-ordering")
        after = [await place(client) for _ in range(3)]
        assert [await state_of(client, order) for order in after] == ["completed"] * 3
