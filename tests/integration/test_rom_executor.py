"""ROM executes AllocateResources / ReleaseResources through the real runtime on the embedded bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from strowger.components.contract import (
    ALLOCATE_RESOURCES,
    RELEASE_RESOURCES,
    RESOURCE_COMMANDS,
    RESOURCE_EVENTS,
)
from strowger.components.resource_ordering.api import resource_ordering_router
from strowger.components.resource_ordering.consumers import rom_consumer
from strowger.components.resource_ordering.pools import Ipv4Pool, NumberPool, ResourcePools
from strowger.components.resource_ordering.service import ResourceOrdering, resource_order_id
from strowger.events.envelope import Envelope
from strowger.store.db import Database
from strowger.tmf.hubs import HUB_TABLES
from tests.integration.executors import ExecutorWorld, command, retry_of

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    return cast(
        Database, request.getfixturevalue(f"{'postgres' if request.param == 'postgresql' else 'sqlite'}_db")
    )


@pytest.fixture
async def world(database: Database) -> AsyncIterator[tuple[ExecutorWorld, ResourceOrdering]]:
    pools = ResourcePools(
        database,
        [
            Ipv4Pool("ipv4/residential", "100.64.0.0/29", scope="residential"),  # 6 addresses
            NumberPool("vlan/tiny", "vlan", 100, 101),  # 2 VLANs: easy to exhaust
        ],
    )
    await pools.install()
    world = ExecutorWorld(database)
    service = ResourceOrdering(database, pools, world.sink("rom"))
    await service.ensure_tables()
    await world.start([rom_consumer(service)], watch=(RESOURCE_EVENTS,))
    yield world, service
    await world.stop()


def allocate(request_id: str, *resources: dict[str, Any], service_order: str = "SO-1") -> Envelope:
    body = {"requestId": request_id, "serviceOrderId": service_order, "productOrderId": "PO-1"}
    return command(ALLOCATE_RESOURCES, {**body, "resources": list(resources)}, entity_key=service_order)


def release(request_id: str, allocation_request: str) -> Envelope:
    body = {"requestId": request_id, "serviceOrderId": "SO-1", "allocationRequestId": allocation_request}
    return command(RELEASE_RESOURCES, body)


IP = {
    "ref": "ip",
    "specId": "RS-IPV4",
    "name": "IPv4 address",
    "poolType": "ipv4",
    "poolScope": "residential",
}
VLAN = {"ref": "vlan", "specId": "RS-VLAN", "name": "VLAN", "poolType": "vlan"}
ONT = {"ref": "ont", "specId": "RS-ONT", "name": "ONT profile", "poolType": None}  # configuration only


async def usage(service: ResourceOrdering, pool: str) -> int:
    return (await service.pools.usage(pool)).allocated


async def test_allocation_replies_with_the_values_and_records_a_completed_resource_order(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, service = world
    sent = await bus.send(allocate("saga-1/allocate/action", IP, VLAN, ONT), RESOURCE_COMMANDS)
    reply = await bus.reply_to(sent)

    assert reply.event_type == "ResourcesAllocated"
    assert reply.correlation_id == sent.correlation_id and reply.entity_key == "SO-1"
    assert reply.payload["requestId"] == "saga-1/allocate/action"
    assert reply.payload["allocations"] == [
        {"ref": "ip", "poolType": "ipv4", "pool": "ipv4/residential", "value": "100.64.0.1"},
        {"ref": "vlan", "poolType": "vlan", "pool": "vlan/tiny", "value": "100"},
    ]
    order = reply.payload["resourceOrder"]
    assert order["id"] == resource_order_id("saga-1/allocate/action")
    assert order["state"] == "completed"
    assert [item["state"] for item in order["orderItem"]] == ["completed"] * 3
    assert {"id": "SO-1", "name": "ServiceOrder", "externalReferenceType": "ServiceOrder"} in order[
        "externalReference"
    ]
    assert await usage(service, "ipv4/residential") == 1 and await usage(service, "vlan/tiny") == 1
    holders = await service.pools.allocations_of(order["id"])
    assert sorted(held.value for held in holders) == ["100", "100.64.0.1"]
    await bus.settle(0.3)
    # Written once, in its final state: the order was never visible in between (one transaction).
    created = [e for e in bus.of_type("ResourceOrderCreateEvent") if e.entity_key == order["id"]]
    assert [e.payload["resourceOrder"]["state"] for e in created] == ["completed"]
    assert bus.of_type("ResourceOrderStateChangeEvent") == []


async def test_a_duplicate_delivery_and_a_retry_allocate_nothing_more(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, service = world
    sent = allocate("saga-2/allocate/action", IP, VLAN)
    await bus.send(sent, RESOURCE_COMMANDS)
    await bus.send(sent, RESOURCE_COMMANDS)  # the broker redelivers the same command
    first = await bus.reply_to(sent)
    retried = await bus.send(retry_of(sent), RESOURCE_COMMANDS)  # the saga retries: new id, same requestId
    second = await bus.reply_to(retried)
    await bus.settle()

    assert len(bus.replies_to(sent)) == 1
    assert second.event_type == "ResourcesAllocated"
    assert second.payload["allocations"] == first.payload["allocations"]
    assert await usage(service, "ipv4/residential") == 1 and await usage(service, "vlan/tiny") == 1
    assert len(bus.of_type("ResourceOrderCreateEvent")) == 1


async def test_an_exhausted_pool_fails_permanently_and_keeps_no_partial_claim(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, service = world
    for n in (1, 2):
        await bus.reply_to(await bus.send(allocate(f"fill-{n}", {**VLAN, "ref": "v"}), RESOURCE_COMMANDS))
    assert await usage(service, "vlan/tiny") == 2

    sent = await bus.send(allocate("saga-3/allocate/action", IP, VLAN), RESOURCE_COMMANDS)
    reply = await bus.reply_to(sent)

    assert reply.event_type == "ResourceAllocationFailed"
    assert reply.payload["permanent"] is True
    assert "exhausted" in reply.payload["error"]
    assert reply.payload["resourceOrder"]["state"] == "failed"
    assert await usage(service, "ipv4/residential") == 0  # the IP claimed before the VLAN was rolled back


async def test_an_unknown_pool_type_and_a_malformed_command_fail_permanently(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, _ = world
    unknown = await bus.send(allocate("saga-4", {"ref": "x", "poolType": "e164"}), RESOURCE_COMMANDS)
    no_request = await bus.send(command(ALLOCATE_RESOURCES, {"resources": []}), RESOURCE_COMMANDS)

    failed = await bus.reply_to(unknown)
    malformed = await bus.reply_to(no_request)

    assert failed.event_type == "ResourceAllocationFailed" and failed.payload["permanent"] is True
    assert "e164" in failed.payload["error"]
    assert malformed.event_type == "ResourceAllocationFailed" and malformed.payload["permanent"] is True
    assert "requestId" in malformed.payload["error"]


async def test_release_frees_every_value_once_and_is_idempotent(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, service = world
    allocated = await bus.reply_to(await bus.send(allocate("saga-5/allocate", IP, VLAN), RESOURCE_COMMANDS))
    sent = await bus.send(release("saga-5/release", "saga-5/allocate"), RESOURCE_COMMANDS)
    reply = await bus.reply_to(sent)
    again = await bus.reply_to(await bus.send(retry_of(sent), RESOURCE_COMMANDS))

    assert reply.event_type == "ResourcesReleased"
    assert reply.payload["released"] == allocated.payload["allocations"]
    order = reply.payload["resourceOrder"]
    assert order["state"] == "completed" and {item["action"] for item in order["orderItem"]} == {"delete"}
    assert again.event_type == "ResourcesReleased" and again.payload["released"] == reply.payload["released"]
    assert await usage(service, "ipv4/residential") == 0 and await usage(service, "vlan/tiny") == 0


async def test_a_release_before_its_allocation_stops_the_late_allocation(
    world: tuple[ExecutorWorld, ResourceOrdering],
) -> None:
    bus, service = world
    released = await bus.reply_to(
        await bus.send(release("saga-6/release", "saga-6/allocate"), RESOURCE_COMMANDS)
    )
    late = await bus.reply_to(await bus.send(allocate("saga-6/allocate", IP), RESOURCE_COMMANDS))

    assert released.event_type == "ResourcesReleased" and released.payload["released"] == []
    assert late.event_type == "ResourceAllocationFailed" and late.payload["permanent"] is True
    assert late.payload["resourceOrder"]["state"] == "cancelled"
    assert await usage(service, "ipv4/residential") == 0


async def test_the_tmf652_api_serves_the_resource_orders(
    world: tuple[ExecutorWorld, ResourceOrdering], database: Database
) -> None:
    bus, _ = world
    reply = await bus.reply_to(await bus.send(allocate("saga-7/allocate", IP), RESOURCE_COMMANDS))
    await database.create_tables(HUB_TABLES)
    app = FastAPI()
    app.include_router(resource_ordering_router(database, bus.sink("rom")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rom") as http:
        order_id = reply.payload["resourceOrder"]["id"]
        got = await http.get(f"/tmf-api/resourceOrdering/v4/resourceOrder/{order_id}")
        listed = await http.get("/tmf-api/resourceOrdering/v4/resourceOrder", params={"state": "completed"})
        posted = await http.post("/tmf-api/resourceOrdering/v4/resourceOrder", json={"orderItem": []})

    assert got.status_code == 200 and got.json()["state"] == "completed"
    assert [order["id"] for order in listed.json()] == [order_id]
    assert posted.status_code == 405  # orders are executed from the saga's commands, not posted
