"""TMF622 over HTTP (in-process ASGI) on SQLite and PostgreSQL: event-sourced orders, read model, asOf, cancel
tasks, and the validation and completion consumers driven through the consumer runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from strowger.bootstrap import OutboxSink
from strowger.bus.port import Bus, Delivery
from strowger.bus.runtime import Consumer, ConsumerRunner
from strowger.components.catalog import catalog_router
from strowger.components.catalog.seed import load_sample_catalog as seed_sample_catalog
from strowger.components.inventory import ProductInventory
from strowger.components.inventory.products import product_inventory_consumer
from strowger.components.ordering.api import ordering_router
from strowger.components.ordering.consumers import fulfilment_consumer, validation_consumer
from strowger.components.ordering.service import BASE_PATH, OrderingService
from strowger.components.ordering.validation import sample_technical_catalog
from strowger.events.envelope import Envelope, decode, encode
from strowger.events.topics import ORDERING_EVENTS, SERVICE_EVENTS
from strowger.store.db import Database, Transaction
from strowger.store.deadletters import PARKED_TABLES
from strowger.store.eventstore import open_event_store
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox
from strowger.tmf.hubs import CallbackGuard
from strowger.tmf.resources import RESOURCE_TABLES

pytestmark = pytest.mark.integration

ORDERS = f"{BASE_PATH}/productOrder"
CANCELS = f"{BASE_PATH}/cancelProductOrder"
CATALOG = "/tmf-api/productCatalogManagement/v4"


class RecordingSink:
    """The platform's outbox sink, also remembering what committed transactions emitted."""

    def __init__(self) -> None:
        self.outbox = OutboxSink(Outbox(), "ordering")
        self.events: list[Envelope] = []

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        await self.outbox.emit(tx, envelope, topic)
        tx.on_commit(lambda: self.events.append(envelope))

    def of(self, order_id: str, event_type: str | None = None) -> list[Envelope]:
        return [
            envelope
            for envelope in self.events
            if envelope.entity_key == order_id and event_type in (None, envelope.event_type)
        ]


class AckOnly:
    """A subscriber stand-in: the runner only acknowledges through it in these tests."""

    async def commit(self, deliveries: Any) -> None:
        return None


@dataclass
class World:
    http: httpx.AsyncClient
    service: OrderingService
    sink: RecordingSink
    database: Database
    inventory: ProductInventory

    async def deliver(self, consumer: Consumer, *envelopes: Envelope, topic: str) -> ConsumerRunner:
        """Run ``consumer`` on ``envelopes`` through the real runtime (inbox, savepoint, dead letters)."""
        runner = ConsumerRunner(consumer, cast(Bus, None), self.database)
        batch = [
            Delivery(encode(envelope, topic), partition=0, offset=index, timestamp=datetime.now(UTC))
            for index, envelope in enumerate(envelopes)
        ]
        await runner.process(cast(Any, AckOnly()), batch)
        return runner

    async def validate(self, order_id: str) -> ConsumerRunner:
        (created,) = self.sink.of(order_id, "ProductOrderCreateEvent")
        # What the relay would publish: the wire round trip keeps ids and correlation.
        wire = decode(encode(created, "bss.ordering.events"))
        consumer = validation_consumer(self.service, sample_technical_catalog())
        return await self.deliver(consumer, wire, topic="bss.ordering.events")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    """Every test runs on both database backends."""
    name = "sqlite_db" if request.param == "sqlite" else "postgres_db"
    return cast(Database, request.getfixturevalue(name))


@pytest.fixture
async def world(database: Database) -> AsyncIterator[World]:
    sink = RecordingSink()
    store = open_event_store(database)
    service = OrderingService(database, store, sink)
    await service.setup()
    await database.create_tables(RESOURCE_TABLES, OUTBOX_TABLES, INBOX_TABLES, PARKED_TABLES)
    app = FastAPI()
    guard = CallbackGuard.from_settings(["127.0.0.0/8"])
    app.include_router(catalog_router(database, sink, guard))
    app.include_router(ordering_router(service, database, guard))
    inventory = ProductInventory(database, sink)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield World(http, service, sink, database, inventory)


def item(item_id: str = "1", offering: str = "PO-FIBRE-500", **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "action": "add", "productOffering": {"id": offering}, **extra}


def full_order(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "productOrderItem": list(items) or [item()],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
        **extra,
    }


async def place(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(ORDERS, json=body)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["@type"] == "Error" and body["status"] == str(status)
    return body


async def load_sample_catalog(database: Database) -> None:
    """The sample catalog into the TMF620 tables, keeping ids and states (the platform's own seed)."""
    await seed_sample_catalog(database, RecordingSink())


# -- POST ----------------------------------------------------------------------------------------


async def test_a_minimal_order_is_acknowledged_at_once(world: World) -> None:
    response = await world.http.post(ORDERS, json={"productOrderItem": [{"id": "1", "action": "add"}]})
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["state"] == "acknowledged"
    assert order["href"] == f"{ORDERS}/{order['id']}" == response.headers["Location"]
    assert datetime.fromisoformat(order["orderDate"].replace("Z", "+00:00")).tzinfo is not None
    assert order["productOrderItem"][0]["state"] == "acknowledged"
    (created,) = world.sink.of(order["id"])
    assert created.event_type == "ProductOrderCreateEvent"
    assert created.payload == {"productOrder": order}
    assert created.correlation_id  # a new conversation starts here
    history = await world.service.store.history(f"ProductOrder-{order['id']}")
    assert [(event.event_type, event.correlation_id) for event in history] == [
        ("ProductOrderAccepted", created.correlation_id)
    ]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"description": "no items"}, "productOrderItem", "missingBodyField"),
        ({"productOrderItem": [{"action": "add"}]}, "productOrderItem[0].id", "missingBodyField"),
        ({"productOrderItem": [{"id": "1"}]}, "productOrderItem[0].action", "missingBodyField"),
        (
            {"productOrderItem": [{"id": "1", "action": "sell"}]},
            "productOrderItem[0].action",
            "invalidBodyField",
        ),
        (  # not a string: was a 500 (an unhashable value looked up in a set)
            {"productOrderItem": [{"id": "1", "action": ["add"]}]},
            "productOrderItem[0].action",
            "invalidBodyField",
        ),
        (  # the same
            {
                "productOrderItem": [
                    {"id": "1", "action": "add"},
                    {"id": "2", "action": "add", "productOrderItemRelationship": [{"id": {"id": "1"}}]},
                ]
            },
            "productOrderItem[1].productOrderItemRelationship[0].id",
            "invalidBodyField",
        ),
        ({"productOrderItem": [item()], "state": "completed"}, "state", "readOnlyField"),
    ],
)
async def test_a_bad_message_is_refused_naming_the_field(
    world: World, body: dict[str, Any], field: str, code: str
) -> None:
    failure = error(await world.http.post(ORDERS, json=body), 400)
    assert failure["code"] == code
    assert field in failure["message"]
    assert world.sink.events == []


# -- GET -----------------------------------------------------------------------------------------


async def test_get_list_filters_fields_and_pagination(world: World) -> None:
    first = await place(world.http, full_order(description="first", priority="1"))
    second = await place(world.http, full_order(description="second", priority="2"))
    third = await place(world.http, full_order(item("1", "PO-MOBILE-20"), description="third", priority="2"))

    one = await world.http.get(f"{ORDERS}/{second['id']}", params={"fields": "description"})
    assert one.json() == {
        "id": second["id"],
        "href": second["href"],
        "@type": "ProductOrder",
        "description": "second",
    }
    error(await world.http.get(f"{ORDERS}/missing"), 404)

    everything = await world.http.get(ORDERS)
    assert [order["id"] for order in everything.json()] == [first["id"], second["id"], third["id"]]
    assert everything.headers["X-Total-Count"] == "3"

    filtered = await world.http.get(ORDERS, params={"priority": "2", "fields": "priority"})
    assert [order["id"] for order in filtered.json()] == [second["id"], third["id"]]
    assert set(filtered.json()[0]) == {"id", "href", "@type", "priority"}

    nested = await world.http.get(ORDERS, params={"productOrderItem.productOffering.id": "PO-MOBILE-20"})
    assert [order["id"] for order in nested.json()] == [third["id"]]

    page = await world.http.get(ORDERS, params={"offset": "1", "limit": "1", "sort": "-description"})
    assert [order["description"] for order in page.json()] == ["second"]
    assert page.headers["X-Total-Count"] == "3" and page.headers["X-Result-Count"] == "1"

    # No filter, no sort: the database cuts the page in order-date order and counts the orders.
    page = await world.http.get(ORDERS, params={"offset": "1", "limit": "2", "fields": "description"})
    assert [order["id"] for order in page.json()] == [second["id"], third["id"]]
    assert set(page.json()[0]) == {"id", "href", "@type", "description"}
    assert page.headers["X-Total-Count"] == "3" and page.headers["X-Result-Count"] == "2"

    # state= runs in SQL on the view's state column; with nothing else, so do the page and count.
    states = await world.http.get(ORDERS, params={"state": "acknowledged,completed", "limit": "1"})
    assert [order["id"] for order in states.json()] == [first["id"]]
    assert states.headers["X-Total-Count"] == "3" and states.headers["X-Result-Count"] == "1"
    none = await world.http.get(ORDERS, params={"state": "completed"})
    assert none.json() == [] and none.headers["X-Total-Count"] == "0"
    both = await world.http.get(
        ORDERS, params=[("state", "acknowledged"), ("state", "inProgress,acknowledged")]
    )
    assert len(both.json()) == 3  # two state filters AND: their intersection
    mixed = await world.http.get(ORDERS, params={"state": "acknowledged", "priority": "2"})
    assert [order["id"] for order in mixed.json()] == [second["id"], third["id"]]


# -- PATCH ---------------------------------------------------------------------------------------


async def test_patch_rules(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(world.http, full_order())
    url = f"{ORDERS}/{order['id']}"

    patched = await world.http.patch(url, json={"description": "gift"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "gift"
    (change,) = world.sink.of(order["id"], "ProductOrderAttributeValueChangeEvent")
    assert change.extra == {"fieldPath": "description"}
    assert change.correlation_id == world.sink.of(order["id"])[0].correlation_id
    listed = await world.http.get(ORDERS, params={"description": "gift"})
    assert [found["id"] for found in listed.json()] == [order["id"]]

    assert error(await world.http.patch(url, json={"orderDate": "2020-01-01T00:00:00Z"}), 400)["code"] == (
        "readOnlyField"
    )
    assert (
        error(await world.http.patch(url, json={"state": "completed"}), 409)["code"]
        == "invalidStateTransition"
    )
    assert error(await world.http.patch(url, json={"state": "flying"}), 400)["code"] == "invalidBodyField"
    merge = {"productOrderItem": [item("1"), {"id": "2"}]}
    assert "productOrderItem[1].action" in error(await world.http.patch(url, json=merge), 400)["message"]
    error(await world.http.patch(f"{ORDERS}/missing", json={"description": "x"}), 404)

    await world.validate(order["id"])
    assert (await world.http.get(url)).json()["state"] == "inProgress"
    late = await world.http.patch(url, json={"requestedStartDate": "2030-01-01T00:00:00Z"})
    assert error(late, 409)["code"] == "invalidStateTransition"
    held = await world.http.patch(url, json={"state": "held"})
    assert held.status_code == 200 and held.json()["state"] == "held"
    json_patch = [{"op": "replace", "path": "/state", "value": "inProgress"}]
    resumed = await world.http.patch(
        url, json=json_patch, headers={"content-type": "application/json-patch+json"}
    )
    assert resumed.json()["state"] == "inProgress"
    assert [
        event.payload["productOrder"]["state"]
        for event in world.sink.of(order["id"], "ProductOrderStateChangeEvent")
    ] == [
        "inProgress",
        "held",
        "inProgress",
    ]


async def test_delete_only_a_finished_order(world: World) -> None:
    order = await place(world.http, full_order(item("1", "PO-UNKNOWN")))
    url = f"{ORDERS}/{order['id']}"
    assert error(await world.http.delete(url), 409)["code"] == "invalidStateTransition"
    await load_sample_catalog(world.database)
    await world.validate(order["id"])
    assert (await world.http.delete(url)).status_code == 204
    error(await world.http.get(url), 404)
    assert (await world.http.get(ORDERS)).json() == []
    assert [event.event_type for event in world.sink.of(order["id"])][-1] == "ProductOrderDeleteEvent"
    error(await world.http.delete(url), 404)


# -- point in time -------------------------------------------------------------------------------


async def test_as_of_answers_by_replay(world: World) -> None:
    before_anything = datetime.now(UTC)
    await asyncio.sleep(0.01)
    order = await place(world.http, full_order(description="old"))
    url = f"{ORDERS}/{order['id']}"
    await asyncio.sleep(0.01)
    between = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await world.http.patch(url, json={"description": "new"})

    then = await world.http.get(url, params={"asOf": between.isoformat()})
    assert then.status_code == 200, then.text
    assert then.json()["description"] == "old"
    now = await world.http.get(url, params={"asOf": datetime.now(UTC).isoformat().replace("+00:00", "Z")})
    assert now.json()["description"] == "new"
    assert (await world.http.get(url)).json()["description"] == "new"

    error(await world.http.get(url, params={"asOf": before_anything.isoformat()}), 404)
    for malformed in ("yesterday", "2025-01-01", "2025-01-01T10:00:00"):
        failure = error(await world.http.get(url, params={"asOf": malformed}), 400)
        assert failure["code"] == "invalidParameter" and "asOf" in failure["message"]


# -- cancellation --------------------------------------------------------------------------------


async def test_cancelling_an_acknowledged_order_is_done_at_once(world: World) -> None:
    order = await place(world.http, full_order())
    response = await world.http.post(
        CANCELS, json={"productOrder": {"id": order["id"]}, "cancellationReason": "duplicate"}
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["state"] == "done" and task["@type"] == "CancelProductOrder"
    assert task["href"] == response.headers["Location"]
    assert (await world.http.get(f"{CANCELS}/{task['id']}")).json() == task
    assert [found["id"] for found in (await world.http.get(CANCELS)).json()] == [task["id"]]
    cancelled = (await world.http.get(f"{ORDERS}/{order['id']}")).json()
    assert cancelled["state"] == "cancelled" and cancelled["cancellationReason"] == "duplicate"
    states = [
        e.payload["productOrder"]["state"] for e in world.sink.of(order["id"], "ProductOrderStateChangeEvent")
    ]
    assert states == ["assessingCancellation", "pendingCancellation", "cancelled"]
    task_events = [e.event_type for e in world.sink.of(order["id"]) if "cancelProductOrder" in e.payload]
    assert task_events == ["CancelProductOrderCreateEvent", "CancelProductOrderStateChangeEvent"]

    again = await world.http.post(CANCELS, json={"productOrder": {"id": order["id"]}})
    assert error(again, 409)["code"] == "invalidStateTransition"
    assert error(await world.http.post(CANCELS, json={}), 400)["code"] == "missingBodyField"
    assert error(await world.http.post(CANCELS, json={"productOrder": {"id": "nope"}}), 400)["code"] == (
        "invalidBodyField"
    )
    error(await world.http.get(f"{CANCELS}/nope"), 404)


async def test_cancelling_a_started_order_waits_for_fulfilment(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(world.http, full_order())
    await world.validate(order["id"])
    before_task = datetime.now(UTC)
    await asyncio.sleep(0.01)
    task = (await world.http.post(CANCELS, json={"productOrder": {"id": order["id"]}})).json()
    assert task["state"] == "inProgress"
    await asyncio.sleep(0.01)
    in_progress_at = datetime.now(UTC)
    await asyncio.sleep(0.01)
    assert (await world.http.get(f"{ORDERS}/{order['id']}")).json()["state"] == "assessingCancellation"

    await world.deliver(
        fulfilment_consumer(world.service),
        service_order_event(order["id"], "cancelled"),
        topic=SERVICE_EVENTS.name,
    )
    assert (await world.http.get(f"{ORDERS}/{order['id']}")).json()["state"] == "cancelled"
    assert (await world.http.get(f"{CANCELS}/{task['id']}")).json()["state"] == "done"
    # The task as it was while fulfilment was stopping: replayed from the order's events.
    then = await world.http.get(f"{CANCELS}/{task['id']}", params={"asOf": in_progress_at.isoformat()})
    assert then.status_code == 200, then.text
    assert then.json()["state"] == "inProgress" and then.json()["id"] == task["id"]
    error(await world.http.get(f"{CANCELS}/{task['id']}", params={"asOf": before_task.isoformat()}), 404)
    failure = error(await world.http.get(f"{CANCELS}/{task['id']}", params={"asOf": "soon"}), 400)
    assert "asOf" in failure["message"]


# -- validation and completion consumers ---------------------------------------------------------


async def test_validation_rejects_an_unknown_offering_with_the_reason(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(world.http, full_order(item("1", "PO-NOPE")))
    await world.validate(order["id"])
    rejected = (await world.http.get(f"{ORDERS}/{order['id']}")).json()
    assert rejected["state"] == "rejected"
    assert "PO-NOPE" in rejected["note"][-1]["text"]
    (change,) = world.sink.of(order["id"], "ProductOrderStateChangeEvent")
    created = world.sink.of(order["id"], "ProductOrderCreateEvent")[0]
    assert change.payload["productOrder"]["state"] == "rejected"
    assert change.correlation_id == created.correlation_id
    assert change.causation_id == created.event_id
    history = await world.service.store.history(f"ProductOrder-{order['id']}")
    assert {event.correlation_id for event in history} == {created.correlation_id}
    assert history[-1].causation_id == created.event_id


async def test_validation_checks_sellable_characteristics_customer_and_account(world: World) -> None:
    await load_sample_catalog(world.database)
    in_study = await world.http.post(f"{CATALOG}/productOffering", json={"name": "Not yet"})
    cases = {
        "not sellable": full_order(item("1", in_study.json()["id"])),
        "characteristic": full_order(
            item("1", product={"productCharacteristic": [{"name": "downloadSpeed", "value": 1000}]})
        ),
        "customer": {**full_order(), "relatedParty": [{"id": "X", "role": "reseller"}]},
        "account": {key: value for key, value in full_order().items() if key != "billingAccount"},
    }
    reasons = {}
    for name, body in cases.items():
        order = await place(world.http, body)
        await world.validate(order["id"])
        document = (await world.http.get(f"{ORDERS}/{order['id']}")).json()
        assert document["state"] == "rejected", name
        reasons[name] = document["note"][-1]["text"]
    assert "not sellable" in reasons["not sellable"]
    assert "downloadSpeed" in reasons["characteristic"]
    assert "relatedParty" in reasons["customer"]
    assert "billingAccount" in reasons["account"]


async def test_validation_accepts_a_sample_offering_and_is_idempotent(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(
        world.http, full_order(item("1", "PO-BUNDLE-FIBRE-MOBILE"), item("2", "PO-STATIC-IP"))
    )
    runner = await world.validate(order["id"])
    assert runner.stats.applied == 1
    accepted = (await world.http.get(f"{ORDERS}/{order['id']}")).json()
    assert accepted["state"] == "inProgress"
    assert {line["state"] for line in accepted["productOrderItem"]} == {"inProgress"}
    again = await world.validate(order["id"])  # a redelivery: the inbox absorbs it
    assert again.stats.duplicates == 1
    assert len(world.sink.of(order["id"], "ProductOrderStateChangeEvent")) == 1


async def test_fulfilment_results_complete_the_order_and_the_inventory_records_products(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(world.http, full_order(item("1"), item("2", "PO-STATIC-IP")))
    await world.validate(order["id"])
    consumer = fulfilment_consumer(world.service)
    await world.deliver(
        consumer, service_order_event(order["id"], "completed", items=["1"]), topic=SERVICE_EVENTS.name
    )
    assert (await world.http.get(f"{ORDERS}/{order['id']}")).json()["state"] == "inProgress"
    await world.deliver(consumer, service_order_event(order["id"], "inProgress"), topic=SERVICE_EVENTS.name)
    await world.deliver(
        consumer, service_order_event(order["id"], "completed", items=["2"]), topic=SERVICE_EVENTS.name
    )
    done = (await world.http.get(f"{ORDERS}/{order['id']}")).json()
    assert done["state"] == "completed" and "completionDate" in done
    async with world.database.transaction() as tx:
        assert await world.inventory.get(tx, f"{order['id']}-1") is None  # ordering writes no product

    # The inventory's own consumer records them from the event that reports the completion.
    completed = world.sink.of(order["id"], "ProductOrderStateChangeEvent")[-1]
    wire = decode(encode(completed, ORDERING_EVENTS.name))
    await world.deliver(product_inventory_consumer(world.inventory), wire, topic=ORDERING_EVENTS.name)
    async with world.database.transaction() as tx:
        product = await world.inventory.get(tx, f"{order['id']}-1")
    assert product is not None
    assert product["status"] == "active"
    assert product["productOffering"]["id"] == "PO-FIBRE-500"
    assert product["productOrderItem"][0]["productOrderId"] == order["id"]


async def test_a_failed_item_next_to_a_completed_one_makes_the_order_partial(world: World) -> None:
    await load_sample_catalog(world.database)
    order = await place(world.http, full_order(item("1"), item("2", "PO-STATIC-IP")))
    await world.validate(order["id"])
    consumer = fulfilment_consumer(world.service)
    await world.deliver(
        consumer,
        service_order_event(order["id"], "completed", items=["1"]),
        service_order_event(order["id"], "failed", items=["2"]),
        topic=SERVICE_EVENTS.name,
    )
    assert (await world.http.get(f"{ORDERS}/{order['id']}")).json()["state"] == "partial"


async def test_the_hub_registers_listeners(world: World) -> None:
    created = await world.http.post(
        f"{BASE_PATH}/hub",
        json={"callback": "http://127.0.0.1:9/listener", "query": "eventType=ProductOrderStateChangeEvent"},
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert (await world.http.get(location)).json()["callback"] == "http://127.0.0.1:9/listener"
    assert (await world.http.delete(location)).status_code == 204
    error(await world.http.get(location), 404)
    refused = await world.http.post(f"{BASE_PATH}/hub", json={"callback": "http://169.254.169.254/"})
    error(refused, 400)


def service_order_event(order_id: str, state: str, items: list[str] | None = None) -> Envelope:
    references = [{"externalReferenceType": "ProductOrder", "name": order_id}]
    references += [{"externalReferenceType": "ProductOrderItem", "name": item_id} for item_id in items or ()]
    service_order = {"id": f"so-{order_id}-{state}", "state": state, "externalReference": references}
    return Envelope(
        "ServiceOrderStateChangeEvent", {"serviceOrder": service_order}, entity_key=service_order["id"]
    )
