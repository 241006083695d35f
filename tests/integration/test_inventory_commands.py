"""RecordInventory / RemoveInventory through the real runtime on the embedded bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from strowger.components.contract import RECORD_INVENTORY, REMOVE_INVENTORY, RESOURCE_EVENTS, SERVICE_EVENTS
from strowger.components.inventory.commands import InventoryCommands, inventory_command_consumer
from strowger.components.inventory.service import ResourceInventory, ServiceInventory
from strowger.events.envelope import Envelope
from strowger.events.topics import INVENTORY_COMMANDS
from strowger.store.db import Database
from tests.integration.executors import ExecutorWorld, command, retry_of

pytestmark = pytest.mark.integration

World = tuple[ExecutorWorld, InventoryCommands]
TOPIC = INVENTORY_COMMANDS.name


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    return cast(
        Database, request.getfixturevalue(f"{'postgres' if request.param == 'postgresql' else 'sqlite'}_db")
    )


@pytest.fixture
async def world(database: Database) -> AsyncIterator[World]:
    world = ExecutorWorld(database)
    sink = world.sink("inventory")
    commands = InventoryCommands(ServiceInventory(database, sink), ResourceInventory(database, sink))
    await commands.ensure_tables()
    await world.start([inventory_command_consumer(commands)], watch=(SERVICE_EVENTS, RESOURCE_EVENTS))
    yield world, commands
    await world.stop()


def record(request_id: str, suffix: str = "1") -> Envelope:
    body = {
        "requestId": request_id,
        "serviceOrderId": f"SO-{suffix}",
        "productOrderId": f"PO-{suffix}",
        "customerId": "CUST-42",
        "services": [
            {"id": f"svc-access-{suffix}", "name": "Fibre access", "specId": "SS-ACCESS", "state": "active"},
            {"id": f"svc-internet-{suffix}", "name": "Internet", "specId": "SS-INTERNET"},
        ],
        "resources": [{"id": f"res-ip-{suffix}", "name": "IPv4", "specId": "RS-IPV4", "value": "100.64.0.1"}],
    }
    return command(RECORD_INVENTORY, body, entity_key=f"SO-{suffix}")


def remove(request_id: str, record_request: str, suffix: str = "1") -> Envelope:
    body = {"requestId": request_id, "serviceOrderId": f"SO-{suffix}", "recordRequestId": record_request}
    return command(REMOVE_INVENTORY, body, entity_key=f"SO-{suffix}")


async def stored(
    commands: InventoryCommands, database: Database, suffix: str = "1"
) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    async with database.transaction() as tx:
        access = await commands.services.get(tx, f"svc-access-{suffix}")
        internet = await commands.services.get(tx, f"svc-internet-{suffix}")
        resource = await commands.resources.get(tx, f"res-ip-{suffix}")
    assert access is not None and internet is not None and resource is not None
    return access, internet, resource


async def test_record_writes_active_services_and_reserved_resources_linked_to_customer_and_order(
    world: World, database: Database
) -> None:
    bus, commands = world
    sent = await bus.send(record("saga-1/record"), TOPIC)
    reply = await bus.reply_to(sent)

    assert reply.event_type == "InventoryRecorded" and reply.causation_id == sent.event_id
    assert reply.payload["services"] == [
        {"id": "svc-access-1", "state": "active"},
        {"id": "svc-internet-1", "state": "active"},
    ]
    assert reply.payload["resources"] == [{"id": "res-ip-1", "resourceStatus": "reserved"}]
    access, _, resource = await stored(commands, database)
    assert {"id": "CUST-42", "role": "Customer", "@referredType": "Customer"} in access["relatedParty"]
    assert {"id": "PO-1", "role": "ProductOrder", "@referredType": "ProductOrder"} in access["relatedEntity"]
    assert access["serviceSpecification"]["id"] == "SS-ACCESS"
    assert resource["operationalState"] == "enable"
    assert {"name": "value", "value": "100.64.0.1"} in resource["resourceCharacteristic"]
    await bus.settle(0.3)
    assert len(bus.of_type("ServiceCreateEvent")) == 2 and len(bus.of_type("ResourceCreateEvent")) == 1


async def test_a_duplicate_and_a_retry_record_nothing_twice(world: World) -> None:
    bus, _ = world
    sent = record("saga-2/record")
    await bus.send(sent, TOPIC)
    await bus.send(sent, TOPIC)
    first = await bus.reply_to(sent)
    again = await bus.reply_to(await bus.send(retry_of(sent), TOPIC))
    await bus.settle()

    assert len(bus.replies_to(sent)) == 1
    assert again.event_type == "InventoryRecorded" and again.payload == first.payload
    assert len(bus.of_type("ServiceCreateEvent")) == 2  # no second write, no second event


async def test_remove_terminates_services_and_frees_resources_idempotently(
    world: World, database: Database
) -> None:
    bus, commands = world
    await bus.reply_to(await bus.send(record("saga-3/record"), TOPIC))
    sent = await bus.send(remove("saga-3/remove", "saga-3/record"), TOPIC)
    reply = await bus.reply_to(sent)
    again = await bus.reply_to(await bus.send(retry_of(sent), TOPIC))

    assert reply.event_type == "InventoryRemoved"
    assert {s["state"] for s in reply.payload["services"]} == {"terminated"}
    assert reply.payload["resources"] == [{"id": "res-ip-1", "resourceStatus": "available"}]
    assert again.event_type == "InventoryRemoved" and again.payload == reply.payload
    access, internet, resource = await stored(commands, database)
    assert access["state"] == internet["state"] == "terminated" and "endDate" in access
    assert resource["resourceStatus"] == "available"
    await bus.settle(0.3)
    assert len([e for e in bus.of_type("ServiceStateChangeEvent") if e.entity_key == "svc-access-1"]) == 1


async def test_a_remove_that_overtakes_its_record_stops_it(world: World) -> None:
    bus, _ = world
    removed = await bus.reply_to(await bus.send(remove("saga-4/remove", "saga-4/record", "4"), TOPIC))
    late = await bus.reply_to(await bus.send(record("saga-4/record", "4"), TOPIC))
    await bus.settle(0.3)

    assert removed.event_type == "InventoryRemoved" and removed.payload["services"] == []
    assert late.event_type == "InventoryRecordFailed" and late.payload["permanent"] is True
    assert [e for e in bus.of_type("ServiceCreateEvent") if e.entity_key.endswith("-4")] == []


async def test_an_illegal_move_or_a_malformed_command_fails_permanently_writing_nothing(
    world: World, database: Database
) -> None:
    bus, commands = world
    await bus.reply_to(await bus.send(record("saga-5/record", "5"), TOPIC))
    await bus.reply_to(await bus.send(remove("saga-5/remove", "saga-5/record", "5"), TOPIC))
    revive = await bus.reply_to(await bus.send(record("saga-6/record", "5"), TOPIC))  # same ids, terminated
    malformed = await bus.reply_to(
        await bus.send(command(RECORD_INVENTORY, {"requestId": "x", "services": [{}]}), TOPIC)
    )

    assert revive.event_type == "InventoryRecordFailed" and revive.payload["permanent"] is True
    assert malformed.event_type == "InventoryRecordFailed" and malformed.payload["permanent"] is True
    _, _, resource = await stored(commands, database, "5")
    assert resource["resourceStatus"] == "available"  # the failed record's resource write was rolled back
