"""The schema registry's REST API (SQLite) and its storage on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from strowger.errors import SchemaViolation
from strowger.events.registry import IncompatibleSchema, SchemaRegistry
from strowger.events.schemas import builtin_schemas
from strowger.events.topics import ALL_TOPICS
from strowger.ops.registry_api import asyncapi_router, registry_router
from strowger.store.db import Database

pytestmark = pytest.mark.integration

ORDER_V1: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["acknowledged", "inProgress", "completed"]},
        "priority": {"type": "number"},
    },
    "required": ["id"],
}
ORDER_V2 = {**ORDER_V1, "properties": {**ORDER_V1["properties"], "note": {"type": "string"}}}
ORDER_BROKEN = {
    **ORDER_V1,
    "properties": {**ORDER_V1["properties"], "priority": {"type": "integer"}},
    "required": ["id", "category"],
}


def body(schema: dict[str, Any]) -> dict[str, str]:
    return {"schema": orjson.dumps(schema).decode(), "schemaType": "JSON"}


@pytest.fixture
async def registry(sqlite_db: Database) -> SchemaRegistry:
    registry = SchemaRegistry(sqlite_db)
    await registry.create_tables()
    return registry


@pytest.fixture
async def client(registry: SchemaRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(registry_router(registry))
    app.include_router(asyncapi_router(registry, ALL_TOPICS))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        yield http


async def test_register_read_and_list(client: httpx.AsyncClient) -> None:
    first = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    second = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V2))
    assert first.status_code == second.status_code == 200
    assert second.json()["id"] != first.json()["id"]

    assert (await client.get("/schema-registry/subjects")).json() == ["Order"]
    assert (await client.get("/schema-registry/subjects/Order/versions")).json() == [1, 2]
    latest = (await client.get("/schema-registry/subjects/Order/versions/latest")).json()
    assert latest["version"] == 2 and latest["id"] == second.json()["id"]
    assert orjson.loads(latest["schema"]) == ORDER_V2
    v1 = (await client.get("/schema-registry/subjects/Order/versions/1")).json()
    assert orjson.loads(v1["schema"]) == ORDER_V1
    by_id = (await client.get(f"/schema-registry/schemas/ids/{first.json()['id']}")).json()
    assert orjson.loads(by_id["schema"]) == ORDER_V1 and by_id["schemaType"] == "JSON"


async def test_registering_an_identical_schema_returns_the_existing_id(client: httpx.AsyncClient) -> None:
    first = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    reordered = orjson.loads(orjson.dumps(dict(reversed(list(ORDER_V1.items())))))
    again = await client.post("/schema-registry/subjects/Order/versions", json=body(reordered))
    elsewhere = await client.post("/schema-registry/subjects/Other/versions", json=body(ORDER_V1))
    assert first.json() == again.json() == elsewhere.json()
    assert (await client.get("/schema-registry/subjects/Order/versions")).json() == [1]


async def test_incompatible_schema_is_refused_with_each_breaking_change(client: httpx.AsyncClient) -> None:
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    refused = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_BROKEN))
    assert refused.status_code == 409
    answer = refused.json()
    assert answer["error_code"] == 409
    assert any("$.priority" in line and "number to integer" in line for line in answer["messages"])
    assert any("$.category" in line and "new required field" in line for line in answer["messages"])
    assert (await client.get("/schema-registry/subjects/Order/versions")).json() == [1]


async def test_compatibility_check_endpoint(client: httpx.AsyncClient) -> None:
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    url = "/schema-registry/compatibility/subjects/Order/versions/latest"
    good = (await client.post(url, json=body(ORDER_V2))).json()
    bad = (await client.post(url, json=body(ORDER_BROKEN))).json()
    assert good == {"is_compatible": True, "messages": []}
    assert bad["is_compatible"] is False and len(bad["messages"]) == 2


async def test_config_global_and_per_subject(client: httpx.AsyncClient) -> None:
    assert (await client.get("/schema-registry/config")).json()["compatibilityLevel"] == "BACKWARD"
    put = await client.put("/schema-registry/config", json={"compatibility": "full_transitive"})
    assert put.json() == {"compatibility": "FULL_TRANSITIVE"}
    missing = await client.get("/schema-registry/config/Order")
    assert missing.status_code == 404 and missing.json()["error_code"] == 40408
    fallback = await client.get("/schema-registry/config/Order", params={"defaultToGlobal": "true"})
    assert fallback.json()["compatibility"] == "FULL_TRANSITIVE"

    await client.put("/schema-registry/config/Order", json={"compatibility": "NONE"})
    assert (await client.get("/schema-registry/config/Order")).json()["compatibility"] == "NONE"
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    accepted = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_BROKEN))
    assert accepted.status_code == 200  # NONE: anything goes

    wrong = await client.put("/schema-registry/config", json={"compatibility": "SIDEWAYS"})
    assert wrong.status_code == 422 and wrong.json()["error_code"] == 42203


async def test_delete_subject(client: httpx.AsyncClient) -> None:
    created = await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V2))
    assert (await client.delete("/schema-registry/subjects/Order")).json() == [1, 2]
    assert (await client.get("/schema-registry/subjects")).json() == []
    gone = await client.get("/schema-registry/subjects/Order/versions")
    assert gone.status_code == 404 and gone.json()["error_code"] == 40401
    kept = await client.get(f"/schema-registry/schemas/ids/{created.json()['id']}")
    assert kept.status_code == 200  # ids stay resolvable for messages already written


async def test_errors_are_registry_errors_never_500(client: httpx.AsyncClient) -> None:
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    cases = [
        (client.get("/schema-registry/subjects/Nope/versions/1"), 404, 40401),
        (client.get("/schema-registry/subjects/Order/versions/7"), 404, 40402),
        (client.get("/schema-registry/subjects/Order/versions/zero"), 422, 42202),
        (client.get("/schema-registry/schemas/ids/999"), 404, 40403),
        (client.post("/schema-registry/subjects/Order/versions", json={"schema": "{not json"}), 422, 42201),
        (
            client.post("/schema-registry/subjects/Order/versions", json=body({"type": "nonsense"})),
            422,
            42201,
        ),
        (client.post("/schema-registry/subjects/Order/versions", json={"schemaType": "AVRO"}), 422, 42200),
        (
            client.post(
                "/schema-registry/subjects/Order/versions", json={"schema": "{}", "schemaType": "AVRO"}
            ),
            422,
            42201,
        ),
    ]
    for request, status, code in cases:
        answer = await request
        assert (answer.status_code, answer.json()["error_code"]) == (status, code), answer.text
        assert answer.json()["message"]


async def test_lookup_finds_the_version_of_a_schema(client: httpx.AsyncClient) -> None:
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V1))
    await client.post("/schema-registry/subjects/Order/versions", json=body(ORDER_V2))
    found = await client.post("/schema-registry/subjects/Order", json=body(ORDER_V2))
    assert found.json()["version"] == 2
    missing = await client.post("/schema-registry/subjects/Order", json=body({"type": "string"}))
    assert missing.json()["error_code"] == 40403


async def test_builtin_schemas_seed_validate_and_document(
    registry: SchemaRegistry, client: httpx.AsyncClient
) -> None:
    builtins = builtin_schemas()
    await registry.register_all(builtins)
    await registry.register_all(builtins)  # idempotent: seeding twice changes nothing
    subjects = (await client.get("/schema-registry/subjects")).json()
    assert "ProductOrderStateChangeEvent" in subjects and len(subjects) == len(builtins)
    assert (await client.get("/schema-registry/subjects/ProductOrderStateChangeEvent/versions")).json() == [1]

    validator = await registry.validator("ProductOrderStateChangeEvent", 1)
    assert validator is await registry.validator("ProductOrderStateChangeEvent", 1)  # cached
    event = {
        "eventId": "e-1",
        "eventTime": "2024-05-01T10:00:00.000Z",
        "eventType": "ProductOrderStateChangeEvent",
        "event": {"productOrder": {"id": "42", "state": "completed"}},
    }
    validator.validate(event)
    wrong = {**event, "event": {"productOrder": {"id": "42", "state": "finished"}}}
    with pytest.raises(SchemaViolation, match=r"\$\.event\.productOrder\.state"):
        await registry.validate("ProductOrderStateChangeEvent", 1, wrong)
    with pytest.raises(SchemaViolation, match="no schema registered"):
        await registry.validator("NoSuchEvent", 1)

    document = (await client.get("/asyncapi.json")).json()
    ordering = document["channels"]["bss.ordering.events"]["subscribe"]["message"]["oneOf"]
    assert {"$ref": "#/components/messages/ProductOrderStateChangeEvent.v1"} in ordering


async def test_postgres_storage(postgres_db: Database) -> None:
    registry = SchemaRegistry(postgres_db)
    await registry.create_tables()
    await registry.create_tables()  # idempotent DDL
    first = await registry.register("Order", ORDER_V1)
    assert await registry.register("Order", ORDER_V1) == first
    second = await registry.register("Order", ORDER_V2)
    assert await registry.versions("Order") == [1, 2]
    assert (await registry.get("Order", "latest")).id == second
    assert await registry.schema_by_id(first) == ORDER_V1
    with pytest.raises(IncompatibleSchema) as refused:
        await registry.register("Order", ORDER_BROKEN)
    assert {issue.kind for issue in refused.value.issues} == {"TYPE_NARROWED", "REQUIRED_FIELD_ADDED"}

    await registry.set_compatibility("FORWARD", "Order")
    assert (await registry.compatibility("Order")).value == "FORWARD"
    assert (await registry.compatibility()).value == "BACKWARD"
    assert await registry.delete_subject("Order") == [1, 2]
    assert await registry.subjects() == []


async def test_postgres_concurrent_registrations_take_distinct_versions(postgres_db: Database) -> None:
    registry = SchemaRegistry(postgres_db)
    await registry.create_tables()
    await registry.set_compatibility("NONE")
    schemas = [{"type": "object", "title": f"variant {n}"} for n in range(6)]
    await asyncio.gather(*(registry.register("Race", schema) for schema in schemas))
    assert await registry.versions("Race") == [1, 2, 3, 4, 5, 6]
