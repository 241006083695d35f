"""TMF620 over HTTP (in-process ASGI) on SQLite: the TMF630 conventions end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import httpx
import orjson
import pytest
from fastapi import FastAPI

from strowger.components.catalog import catalog_router
from strowger.events.envelope import Envelope
from strowger.store.db import Database, Transaction
from strowger.tmf.hubs import CallbackGuard

pytestmark = pytest.mark.integration

BASE = "/tmf-api/productCatalogManagement/v4"


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
    guard = CallbackGuard.from_settings(["127.0.0.0/8"])
    app.include_router(catalog_router(sqlite_db, sink, guard))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield http


async def create(client: httpx.AsyncClient, resource: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{BASE}/{resource}", json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "reason", "message", "status", "@type"}
    assert body["status"] == str(status) and body["@type"] == "Error"
    return body


@pytest.mark.parametrize(
    "resource", ["catalog", "category", "productSpecification", "productOffering", "productOfferingPrice"]
)
async def test_create_with_only_a_name_gets_server_defaults(client: httpx.AsyncClient, resource: str) -> None:
    response = await client.post(f"{BASE}/{resource}", json={"name": "Fibre"})
    assert response.status_code == 201
    body = response.json()
    assert body["href"] == f"{BASE}/{resource}/{body['id']}" == response.headers["location"]
    assert body["lifecycleStatus"] == "In study"
    assert body["lastUpdate"].endswith("Z")
    assert (await client.get(body["href"])).json() == body


async def test_create_events_go_to_the_catalog_topic(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    offer = await create(client, "productOffering", name="Fibre")
    topic, envelope = sink.events[-1]
    assert (topic, envelope.event_type) == ("bss.catalog.events", "ProductOfferingCreateEvent")
    assert envelope.payload == {"productOffering": offer} and envelope.entity_key == offer["id"]


async def test_required_fields_and_types_are_named(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    body = assert_error(await client.post(f"{BASE}/productOffering", json={"description": "x"}), 400)
    assert "name" in body["message"]
    body = assert_error(
        await client.post(f"{BASE}/productOffering", json={"name": "A", "isBundle": "yes"}), 400
    )
    assert body["message"].startswith("isBundle")
    body = assert_error(
        await client.post(f"{BASE}/productOffering", json={"name": "A", "validFor": {"startDateTime": 5}}),
        400,
    )
    assert body["message"].startswith("validFor.startDateTime")
    assert_error(await client.post(f"{BASE}/productOffering", json={"name": "A", "id": "mine"}), 400)
    assert_error(
        await client.post(f"{BASE}/productOffering", json={"name": "A", "lifecycleStatus": "Cool"}), 400
    )
    assert sink.events == []


async def test_unknown_fields_and_polymorphism_survive_round_trip(client: httpx.AsyncClient) -> None:
    offer = await create(
        client,
        "productOffering",
        name="Fibre",
        **{"@type": "FibreOffering", "@baseType": "ProductOffering", "@schemaLocation": "https://x/s.json"},
        speed={"down": 1000, "unit": "Mbps"},
    )
    stored = (await client.get(offer["href"])).json()
    assert stored["@type"] == "FibreOffering" and stored["@baseType"] == "ProductOffering"
    assert stored["@schemaLocation"] == "https://x/s.json" and stored["speed"] == {
        "down": 1000,
        "unit": "Mbps",
    }


async def test_filters_fields_sort_and_pagination(client: httpx.AsyncClient) -> None:
    categories = {name: (await create(client, "category", name=name))["id"] for name in "ABC"}
    for name, bundle in (("B", True), ("A", False), ("C", False)):
        await create(
            client, "productOffering", name=name, isBundle=bundle, category=[{"id": categories[name]}]
        )
    response = await client.get(f"{BASE}/productOffering", params={"isBundle": "false", "fields": "name"})
    assert response.headers["x-total-count"] == response.headers["x-result-count"] == "2"
    items = response.json()
    assert {item["name"] for item in items} == {"A", "C"}
    assert set(items[0]) == {"id", "href", "@type", "name"}
    response = await client.get(
        f"{BASE}/productOffering?category.id={categories['B']},{categories['C']}&sort=-name"
    )
    assert [item["name"] for item in response.json()] == ["C", "B"]
    response = await client.get(f"{BASE}/productOffering?sort=name&offset=1&limit=1")
    assert [item["name"] for item in response.json()] == ["B"]
    assert (response.headers["x-total-count"], response.headers["x-result-count"]) == ("3", "1")
    assert_error(await client.get(f"{BASE}/productOffering?limit=-3"), 400)
    # No filter, no sort: the database cuts the page in creation order and counts the collection.
    response = await client.get(f"{BASE}/productOffering?offset=1&limit=1&fields=name")
    assert response.json() == [{"id": ANY, "href": ANY, "@type": "ProductOffering", "name": "A"}]
    assert (response.headers["x-total-count"], response.headers["x-result-count"]) == ("3", "1")
    response = await client.get(f"{BASE}/productOffering?offset=3")
    assert response.json() == [] and response.headers["x-total-count"] == "3"
    one = (await client.get(f"{BASE}/productOffering?sort=name&offset=1&limit=1")).json()[0]
    assert set((await client.get(f"{one['href']}?fields=isBundle")).json()) == {
        "id",
        "href",
        "@type",
        "isBundle",
    }


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    url = f"{BASE}/productOffering/nope"
    assert assert_error(await client.get(url), 404)["code"] == "notFound"
    assert_error(await client.patch(url, json={"name": "x"}), 404)
    assert_error(await client.delete(url), 404)


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        ("application/merge-patch+json", {"description": "fast", "name": "Fibre 2G"}),
        ("application/json", {"description": "fast", "name": "Fibre 2G"}),
        (
            "application/json-patch+json",
            [
                {"op": "add", "path": "/description", "value": "fast"},
                {"op": "replace", "path": "/name", "value": "Fibre 2G"},
            ],
        ),
    ],
)
async def test_patch_content_types(
    client: httpx.AsyncClient, sink: RecordingSink, content_type: str, patch: Any
) -> None:
    offer = await create(client, "productOffering", name="Fibre")
    response = await client.patch(
        offer["href"], content=orjson.dumps(patch), headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Fibre 2G" and response.json()["description"] == "fast"
    assert (await client.get(offer["href"])).json() == response.json()
    _, envelope = sink.events[-1]
    assert envelope.event_type == "ProductOfferingAttributeValueChangeEvent"
    assert envelope.extra["fieldPath"] == "name,description"


async def test_patch_refuses_read_only_fields(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    offer = await create(client, "productOffering", name="Fibre")
    for patch in ({"id": "other"}, {"href": "/x"}, {"lastUpdate": "2020-01-01T00:00:00Z"}):
        body = assert_error(await client.patch(offer["href"], json=patch), 400)
        assert next(iter(patch)) in body["message"]
    assert (await client.get(offer["href"])).json() == offer
    assert sink.types() == ["ProductOfferingCreateEvent"]


async def test_lifecycle_is_enforced(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    offer = await create(client, "productOffering", name="Fibre")
    body = assert_error(await client.patch(offer["href"], json={"lifecycleStatus": "Launched"}), 409)
    assert "'In study' to 'Launched'" in body["message"] and "In design" in body["message"]
    for state in ("In design", "In test", "Active", "Launched", "Retired", "Obsolete"):
        response = await client.patch(offer["href"], json={"lifecycleStatus": state})
        assert response.status_code == 200, response.text
    assert_error(await client.patch(offer["href"], json={"lifecycleStatus": "Active"}), 409)
    assert sink.types().count("ProductOfferingStateChangeEvent") == 6
    assert "ProductOfferingAttributeValueChangeEvent" not in sink.types()


async def test_bad_input_is_never_a_500(client: httpx.AsyncClient) -> None:
    url = f"{BASE}/productOffering"
    assert_error(
        await client.post(url, content=b'{"name": ', headers={"content-type": "application/json"}), 400
    )
    assert_error(await client.post(url, content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert_error(await client.post(url, content=b"name=x", headers={"content-type": "text/plain"}), 415)
    big = orjson.dumps({"name": "x", "description": "y" * (2 << 20)})
    assert_error(await client.post(url, content=big, headers={"content-type": "application/json"}), 413)
    offer = await create(client, "productOffering", name="Fibre")
    assert_error(
        await client.patch(offer["href"], content=b"{", headers={"content-type": "application/json"}), 400
    )
    assert_error(await client.patch(offer["href"], json={"name": None}), 400)  # name is required
    assert_error(
        await client.patch(
            offer["href"], content=b'{"op": "add"}', headers={"content-type": "application/json-patch+json"}
        ),
        400,
    )


async def test_references_to_missing_catalog_entities_are_refused_naming_the_attribute(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    before = len(sink.events)
    refused = {
        "category": {"name": "Fibre", "parentId": "no-such-category"},
        "catalog": {"name": "B2C", "category": [{"id": "no-such-category"}]},
        "productOffering": {"name": "Fibre", "productSpecification": {"id": "no-such-spec"}},
    }
    for resource, body in refused.items():
        error = assert_error(await client.post(f"{BASE}/{resource}", json=body), 400)
        assert error["code"] == "unknownReference" and "does not exist" in error["message"], error
    fields = [
        assert_error(
            await client.post(
                f"{BASE}/productOffering",
                json={"name": "Fibre", "productOfferingPrice": [{"id": "no-such-price"}]},
            ),
            400,
        )["message"]
    ]
    assert fields[0].startswith("productOfferingPrice.id refers to productOfferingPrice")
    assert len(sink.events) == before  # nothing stored, nothing published

    parent = await create(client, "category", name="Residential")
    child = await create(client, "category", name="Fibre", parentId=parent["id"])
    spec = await create(client, "productSpecification", name="Fibre")
    external = {"id": "PS-9", "href": "https://partner.example/tmf-api/productCatalogManagement/v4/x/PS-9"}
    offer = await create(
        client,
        "productOffering",
        name="Fibre",
        productSpecification={"id": spec["id"], "href": spec["href"]},
        category=[{"id": child["id"]}],
        bundledProductOffering=[external],  # another system's: not this catalog's to check
    )
    assert offer["category"] == [{"id": child["id"]}]


async def test_a_patch_checks_the_references_it_adds_not_those_already_there(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    parent = await create(client, "category", name="Residential")
    child = await create(client, "category", name="Fibre", parentId=parent["id"])
    assert (await client.delete(parent["href"])).status_code == 204
    moved = await client.patch(child["href"], json={"lifecycleStatus": "In design"})
    assert moved.status_code == 200, moved.text  # the dangling parent was not this write's
    error = assert_error(await client.patch(child["href"], json={"parentId": "gone-too"}), 400)
    assert error["code"] == "unknownReference"


async def test_delete(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    offer = await create(client, "productOffering", name="Fibre")
    response = await client.delete(offer["href"])
    assert response.status_code == 204 and response.content == b""
    assert_error(await client.get(offer["href"]), 404)
    _, envelope = sink.events[-1]
    assert envelope.event_type == "ProductOfferingDeleteEvent"
    assert envelope.payload["productOffering"]["id"] == offer["id"]


async def test_hub_create_get_delete(client: httpx.AsyncClient) -> None:
    query = "eventType=ProductOfferingStateChangeEvent&event.productOffering.lifecycleStatus=Launched"
    response = await client.post(
        f"{BASE}/hub", json={"callback": "http://127.0.0.1:9/listener", "query": query, "secret": "s3cret"}
    )
    assert response.status_code == 201, response.text
    subscription = response.json()
    assert response.headers["location"] == f"{BASE}/hub/{subscription['id']}"
    fetched = (await client.get(response.headers["location"])).json()
    assert fetched == {"id": subscription["id"], "callback": "http://127.0.0.1:9/listener", "query": query}
    assert (await client.delete(response.headers["location"])).status_code == 204
    assert_error(await client.get(response.headers["location"]), 404)
    assert_error(await client.delete(response.headers["location"]), 404)


async def test_hub_refuses_unsafe_callbacks_and_bad_queries(client: httpx.AsyncClient) -> None:
    for callback in ("http://169.254.169.254/", "http://10.0.0.1/x", "file:///etc/passwd"):
        body = assert_error(await client.post(f"{BASE}/hub", json={"callback": callback}), 400)
        assert body["code"] == "unsafeCallback"
    assert_error(await client.post(f"{BASE}/hub", json={"query": "eventType=X"}), 400)
    assert_error(await client.post(f"{BASE}/hub", json={"callback": "http://127.0.0.1/", "query": "x"}), 400)


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get(f"{BASE}/openapi.json")).json()
    assert f"{BASE}/productOffering/{{id}}" in document["paths"]
    assert f"{BASE}/hub" in document["paths"]
    assert "ProductOffering_Create" in document["components"]["schemas"]
    assert "#/definitions/" not in orjson.dumps(document).decode()


async def test_round_trip_on_postgresql(postgres_db: Database, sink: RecordingSink) -> None:
    app = FastAPI()
    app.include_router(catalog_router(postgres_db, sink))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        offer = await create(http, "productOffering", name="Fibre", speed={"down": 1000})
        assert (await http.get(offer["href"])).json() == offer
        response = await http.patch(offer["href"], json={"lifecycleStatus": "In design"})
        assert response.status_code == 200, response.text
        found = (
            await http.get(f"{BASE}/productOffering?speed.down.gte=500&lifecycleStatus=In design")
        ).json()
        assert [item["id"] for item in found] == [offer["id"]]
        assert (await http.delete(offer["href"])).status_code == 204
    assert sink.types() == [
        "ProductOfferingCreateEvent",
        "ProductOfferingStateChangeEvent",
        "ProductOfferingDeleteEvent",
    ]
