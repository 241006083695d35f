"""TMF637/638/639 over HTTP (in-process ASGI) on SQLite, and the inventories' server-side write path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from strowger.components.inventory import (
    ProductInventory,
    ResourceInventory,
    ServiceInventory,
    product_inventory_router,
    resource_inventory_router,
    service_inventory_router,
)
from strowger.errors import InvalidStateTransition, SchemaViolation
from strowger.events.envelope import Envelope
from strowger.store.db import Database, Transaction

pytestmark = pytest.mark.integration

PRODUCT = "/tmf-api/productInventory/v4/product"
SERVICE = "/tmf-api/serviceInventory/v4/service"
RESOURCE = "/tmf-api/resourceInventoryManagement/v4/resource"
SPEC = {"serviceSpecification": {"id": "spec-1"}}


class RecordingSink:
    """Keeps the events of committed transactions only, like the outbox would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        tx.on_commit(lambda: self.events.append((topic, envelope)))

    def types(self) -> list[str]:
        return [envelope.event_type for _, envelope in self.events]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sqlite_db: Database, sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    for router in (product_inventory_router, service_inventory_router, resource_inventory_router):
        app.include_router(router(sqlite_db, sink))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield http


async def create(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post(url, json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == str(status) and body["@type"] == "Error"
    return body


@pytest.mark.parametrize(
    ("url", "body", "attribute", "initial", "topic"),
    [
        (PRODUCT, {"name": "Fibre 1G"}, "status", "created", "bss.inventory.events"),
        (SERVICE, {"name": "Access", **SPEC}, "state", "feasibilityChecked", "oss.service.events"),
        (RESOURCE, {"name": "ONT-1"}, "resourceStatus", "standby", "oss.resource.events"),
    ],
)
async def test_create_defaults_status_and_emits_on_the_domain_topic(
    client: httpx.AsyncClient,
    sink: RecordingSink,
    url: str,
    body: dict[str, Any],
    attribute: str,
    initial: str,
    topic: str,
) -> None:
    response = await client.post(url, json=body)
    assert response.status_code == 201, response.text
    document = response.json()
    assert document[attribute] == initial
    assert document["href"] == f"{url}/{document['id']}" == response.headers["location"]
    assert (await client.get(document["href"])).json() == document
    (event_topic, envelope), *_ = sink.events
    type_name = document["@type"]
    assert (event_topic, envelope.event_type) == (topic, f"{type_name}CreateEvent")
    assert envelope.payload == {url.rsplit("/", 1)[1]: document} and envelope.entity_key == document["id"]


async def test_required_fields_and_status_enumerations(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    assert (
        "serviceSpecification" in assert_error(await client.post(SERVICE, json={"name": "x"}), 400)["message"]
    )
    assert "name" in assert_error(await client.post(RESOURCE, json={"description": "x"}), 400)["message"]
    assert_error(await client.post(PRODUCT, json={"status": "live"}), 400)
    assert_error(await client.post(SERVICE, json={"state": "running", **SPEC}), 400)
    body = assert_error(await client.post(RESOURCE, json={"name": "r", "usageState": "sleepy"}), 400)
    assert body["message"].startswith("usageState")
    for not_a_state in ([], {}, ["available"]):  # was a 500: unhashable, looked up in a set
        body = assert_error(
            await client.post(RESOURCE, json={"name": "r", "resourceStatus": not_a_state}), 400
        )
        assert body["message"].startswith("resourceStatus")
    assert_error(await client.post(PRODUCT, json={"id": "mine"}), 400)
    assert sink.events == []
    # The spec's value is "aborted " (trailing space); the corrected value is accepted.
    assert (await create(client, PRODUCT, status="aborted"))["status"] == "aborted"


async def test_filters_fields_and_pagination(client: httpx.AsyncClient) -> None:
    for name, party in (("A", "C1"), ("B", "C2"), ("C", "C1")):
        await create(
            client,
            PRODUCT,
            name=name,
            relatedParty=[{"id": party, "role": "customer", "@referredType": "Individual"}],
        )
    response = await client.get(f"{PRODUCT}?relatedParty.id=C1&fields=name&sort=-name")
    assert [item["name"] for item in response.json()] == ["C", "A"]
    assert set(response.json()[0]) == {"id", "href", "@type", "name"}
    assert response.headers["x-total-count"] == response.headers["x-result-count"] == "2"
    response = await client.get(f"{PRODUCT}?status=created&offset=1&limit=1&sort=name")
    assert [item["name"] for item in response.json()] == ["B"]
    assert (response.headers["x-total-count"], response.headers["x-result-count"]) == ("3", "1")


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    for url in (PRODUCT, SERVICE, RESOURCE):
        assert assert_error(await client.get(f"{url}/nope"), 404)["code"] == "notFound"
        assert_error(await client.patch(f"{url}/nope", json={"name": "x"}), 404)
        assert_error(await client.delete(f"{url}/nope"), 404)


@pytest.mark.parametrize(
    ("url", "body", "attribute", "legal", "illegal"),
    [
        (PRODUCT, {}, "status", ["pendingActive", "active", "suspended", "terminated"], "active"),
        (SERVICE, SPEC, "state", ["designed", "reserved", "active", "terminated"], "active"),
        (RESOURCE, {"name": "r"}, "resourceStatus", ["available", "reserved", "available"], "reserved-x"),
    ],
)
async def test_status_moves_are_enforced_on_patch(
    client: httpx.AsyncClient,
    sink: RecordingSink,
    url: str,
    body: dict[str, Any],
    attribute: str,
    legal: list[str],
    illegal: str,
) -> None:
    document = await create(client, url, **body)
    for state in legal:
        response = await client.patch(document["href"], json={attribute: state})
        assert response.status_code == 200, response.text
    state_changes = [t for t in sink.types() if t.endswith("StateChangeEvent")]
    assert len(state_changes) == len(legal)
    if illegal.endswith("-x"):
        assert_error(await client.patch(document["href"], json={attribute: illegal}), 400)
    else:
        error = assert_error(await client.patch(document["href"], json={attribute: illegal}), 409)
        assert error["code"] == "invalidStateTransition"


async def test_resource_cannot_be_reserved_unless_available(client: httpx.AsyncClient) -> None:
    resource = await create(client, RESOURCE, name="MSISDN 33612345678")
    error = assert_error(await client.patch(resource["href"], json={"resourceStatus": "reserved"}), 409)
    assert "available" in error["message"]


async def test_attribute_change_and_delete_events(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    service = await create(client, SERVICE, name="Access", **SPEC)
    response = await client.patch(
        service["href"],
        json=[{"op": "replace", "path": "/name", "value": "Access 2"}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert response.json()["name"] == "Access 2"
    _, envelope = sink.events[-1]
    assert envelope.event_type == "ServiceAttributeValueChangeEvent"
    assert envelope.extra == {"fieldPath": "name"}
    assert (await client.delete(service["href"])).status_code == 204
    assert sink.types()[-1] == "ServiceDeleteEvent"
    assert_error(await client.get(service["href"]), 404)


async def test_hub_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    base = PRODUCT.rsplit("/", 1)[0]
    spec = (await client.get(f"{base}/openapi.json")).json()
    assert set(spec["paths"]) >= {"/tmf-api/productInventory/v4/product", f"{PRODUCT}/{{id}}"}
    assert "ProductStatusType" in spec["components"]["schemas"]
    assert_error(await client.post(f"{base}/hub", json={"callback": "http://127.0.0.1/listener"}), 400)


# --- the server-side write path --------------------------------------------------------------


async def test_upsert_shares_the_callers_transaction(sqlite_db: Database, sink: RecordingSink) -> None:
    inventory = ProductInventory(sqlite_db, sink)
    await inventory.ensure_tables()
    with pytest.raises(RuntimeError):
        async with sqlite_db.transaction() as tx:
            await inventory.upsert(tx, {"id": "p-1", "name": "Fibre", "status": "created"})
            raise RuntimeError("the handler failed after writing")
    async with sqlite_db.transaction() as tx:
        assert await inventory.get(tx, "p-1") is None
    assert sink.events == []


async def test_upsert_is_idempotent_and_enforces_status_moves(
    sqlite_db: Database, sink: RecordingSink, client: httpx.AsyncClient
) -> None:
    inventory = ProductInventory(sqlite_db, sink)
    await inventory.ensure_tables()
    product = {
        "id": "p-1",
        "name": "Fibre",
        "status": "created",
        "relatedParty": [{"id": "C", "@referredType": "Individual"}],
    }
    for _ in range(2):
        async with sqlite_db.transaction() as tx:
            stored = await inventory.upsert(tx, product)
    assert stored["href"] == f"{PRODUCT}/p-1"
    assert sink.types() == ["ProductCreateEvent"]
    async with sqlite_db.transaction() as tx:
        await inventory.set_state(tx, "p-1", "active")
    assert sink.types()[-1] == "ProductStateChangeEvent"
    with pytest.raises(InvalidStateTransition):
        async with sqlite_db.transaction() as tx:
            await inventory.upsert(tx, {"id": "p-1", "status": "created"})
    assert (await client.get(f"{PRODUCT}?relatedParty.id=C")).json()[0]["status"] == "active"


async def test_upsert_from_event_takes_the_entity_from_the_payload(
    sqlite_db: Database, sink: RecordingSink
) -> None:
    services, resources = ServiceInventory(sqlite_db, sink), ResourceInventory(sqlite_db, sink)
    await services.ensure_tables()
    event = Envelope(
        "ServiceOrderItemCompleted", {"service": {"id": "s-1", "state": "active", **SPEC}}, "s-1"
    )
    async with sqlite_db.transaction() as tx:
        assert (await services.upsert_from_event(tx, event))["state"] == "active"
        await resources.upsert(tx, {"name": "ONT-7"})
    with pytest.raises(SchemaViolation):
        async with sqlite_db.transaction() as tx:
            await services.upsert_from_event(tx, Envelope("X", {"product": {}}, "k"))
    with pytest.raises(SchemaViolation):
        async with sqlite_db.transaction() as tx:
            await services.upsert(tx, {"id": "s-2", "state": "active"})  # no serviceSpecification
    assert [topic for topic, _ in sink.events] == ["oss.service.events", "oss.resource.events"]


async def test_upsert_on_postgresql(postgres_db: Database, sink: RecordingSink) -> None:
    inventory = ResourceInventory(postgres_db, sink)
    await inventory.ensure_tables()
    async with postgres_db.transaction() as tx:
        await inventory.upsert(tx, {"id": "r-1", "name": "ONT-1", "resourceStatus": "available"})
        await inventory.set_state(tx, "r-1", "reserved")
    with pytest.raises(InvalidStateTransition):
        async with postgres_db.transaction() as tx:
            await inventory.set_state(tx, "r-1", "standby")
    async with postgres_db.transaction() as tx:
        stored = await inventory.get(tx, "r-1")
    assert stored is not None and stored["resourceStatus"] == "reserved"
    assert sink.types() == ["ResourceCreateEvent", "ResourceStateChangeEvent"]
