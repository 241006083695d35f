"""A product order fulfilled end to end on the embedded bus: COM → SOM saga → (fake) executors → COM.

The executors here are fake consumers answering the fulfilment contract
(components/contract.py); the real ROM/activation/inventory replace them when
they are installed. Everything else is the real platform: outbox, relay,
consumer runtime, HTTP with the security middleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components import contract
from strowger.components.service_ordering.wiring import install
from strowger.events.envelope import Envelope
from strowger.security import SecuritySettings, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings

pytestmark = pytest.mark.e2e

ADMIN_KEY = "stw_test-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
KINDS = {kind.name: kind for kind in contract.ALL_COMMANDS}
REPLY_TOPIC = {contract.RESOURCE_COMMANDS: contract.RESOURCE_EVENTS}
FAILING: set[str] = set()  # command names the fake executors refuse (permanently)


def fake_executors() -> Consumer:
    async def answer(command: Envelope, uow: UnitOfWork) -> None:
        kind = KINDS[command.event_type]
        topic = REPLY_TOPIC.get(kind.topic, contract.SERVICE_EVENTS)
        if kind.name in FAILING:
            await uow.emit(
                command.caused(kind.failed, contract.failure("no capacity", permanent=True)), topic
            )
            return
        body: dict[str, Any] = {"requestId": command.payload["requestId"]}
        if kind is contract.ALLOCATE_RESOURCES:
            body["allocations"] = [
                {"ref": r["ref"], "poolType": r["poolType"], "pool": "p", "value": str(i)}
                for i, r in enumerate(command.payload["resources"])
            ]
        await uow.emit(command.caused(kind.succeeded, body), topic)

    topics = tuple(dict.fromkeys(kind.topic for kind in contract.ALL_COMMANDS))
    return Consumer("fake-executors", topics, answer, frozenset(KINDS), retry_backoff=(0.1,))


def security() -> SecuritySettings:
    entry = ApiKeyEntry(name="admin", sha256=hash_api_key(ADMIN_KEY), scopes=("admin",))
    return SecuritySettings(api_keys=(entry,), api_keys_file=None)


def with_som(platform: Platform) -> Platform:
    if not any(runner.name == "service-ordering" for runner in platform.runners):
        install(platform)  # until the composition root installs SOM itself
    platform.add_consumer(fake_executors())
    return platform


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    FAILING.clear()
    settings = Settings(database_url=f"sqlite:///{tmp_path}/strowger.db")
    app = create_app(with_som(bootstrap(settings)), security())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger") as client:
            yield client


async def place_order(client: httpx.AsyncClient) -> str:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
        # TMF637 needs @referredType when COM records the product (ordering-fulfilment)
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(
        "/tmf-api/productOrderingManagement/v4/productOrder", json=body, headers=HEADERS
    )
    assert created.status_code == 201, created.text
    return str(created.headers["Location"])


async def wait_for(client: httpx.AsyncClient, href: str, states: set[str]) -> dict[str, Any]:
    order: dict[str, Any] = {}
    for _ in range(300):
        order = (await client.get(href, headers=HEADERS)).json()
        if order.get("state") in states:
            return order
        await asyncio.sleep(0.1)
    pytest.fail(f"{href} never reached {states}: {order.get('state')}")


async def test_a_product_order_is_fulfilled_and_completed(client: httpx.AsyncClient) -> None:
    href = await place_order(client)
    order = await wait_for(client, href, {"completed", "failed"})
    assert order["state"] == "completed", order

    listed = (await client.get("/tmf-api/serviceOrdering/v4/serviceOrder", headers=HEADERS)).json()
    assert [so["state"] for so in listed] == ["completed"]
    refs = {ref["externalReferenceType"]: ref["name"] for ref in listed[0]["externalReference"]}
    assert refs["ProductOrder"] == order["id"]

    sagas = (await client.get("/sagas", params={"status": "completed"}, headers=HEADERS)).json()
    assert [saga["id"] for saga in sagas] == [listed[0]["id"]]
    detail = (await client.get(f"/sagas/{listed[0]['id']}", headers=HEADERS)).json()
    assert [step["status"] for step in detail["steps"]] == ["succeeded"] * 3
    assert detail["log"]


async def test_a_refused_activation_fails_the_product_order(client: httpx.AsyncClient) -> None:
    FAILING.add("ActivateService")
    href = await place_order(client)
    order = await wait_for(client, href, {"completed", "failed"})
    assert order["state"] == "failed"
    sagas = (await client.get("/sagas", headers=HEADERS)).json()
    assert sagas[0]["status"] == "failed"
    refused = await client.post(f"/sagas/{sagas[0]['id']}/retry", json={"reason": "try"}, headers=HEADERS)
    assert refused.status_code == 409  # nothing to retry on a failed saga
    missing = await client.post(f"/sagas/{sagas[0]['id']}/abort", json={}, headers=HEADERS)
    assert missing.status_code == 400
