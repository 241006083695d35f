"""A product order fulfilled end to end on the embedded bus, as `strowger run all` wires it:
COM (TMF622) → SOM saga (TMF641) → ROM (TMF652 + pools) → network activation →
inventories (TMF637/638/639) → COM completes the order → billing charges it.

Everything is the real platform: outbox, relay, consumer runtime, HTTP with the
security middleware. Failures are injected through the activation simulator's
operator endpoint, as an operator would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.charging import BillingLedger
from strowger.security import SecuritySettings, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings

pytestmark = pytest.mark.e2e

ADMIN_KEY = "stw_test-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"


def security() -> SecuritySettings:
    entry = ApiKeyEntry(name="admin", sha256=hash_api_key(ADMIN_KEY), scopes=("admin",))
    return SecuritySettings(api_keys=(entry,), api_keys_file=None)


@pytest.fixture
async def platform(tmp_path: Path) -> Platform:
    return bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(platform, security())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger") as client:
            yield client


async def place_order(client: httpx.AsyncClient, offering: str = "PO-FIBRE-500") -> str:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": offering}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(ORDERS, json=body, headers=HEADERS)
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


async def products_of(client: httpx.AsyncClient, customer: str, timeout: float = 30.0) -> list[Any]:
    """The customer's TMF637 products once there are any (the inventory records them from the
    order's completion event: a moment after the order reads completed)."""
    products: list[Any] = []
    async with asyncio.timeout(timeout):
        while not products:
            params = {"relatedParty.id": customer}
            listed = await client.get("/tmf-api/productInventory/v4/product", params=params, headers=HEADERS)
            products = listed.json()
            if not products:
                await asyncio.sleep(0.05)
    return products


def ledger(platform: Platform) -> BillingLedger:
    return BillingLedger(platform.database, CustomerBilling(platform.database, platform.sink("test")))


async def allocated_values(platform: Platform) -> int:
    row = await platform.database.fetchone(
        "SELECT COUNT(*) FROM resource_pool_slot WHERE request_id IS NOT NULL"
    )
    return int(row[0]) if row else 0


@pytest.mark.parametrize("offering", ["PO-FIBRE-500", "PO-MOBILE-20", "PO-BUNDLE-FIBRE-MOBILE"])
async def test_a_product_order_is_fulfilled_completed_and_charged(
    client: httpx.AsyncClient, platform: Platform, offering: str
) -> None:
    href = await place_order(client, offering)
    order = await wait_for(client, href, {"completed", "failed"})
    assert order["state"] == "completed", order

    service_orders = (await client.get("/tmf-api/serviceOrdering/v4/serviceOrder", headers=HEADERS)).json()
    assert [so["state"] for so in service_orders] == ["completed"]
    refs = {ref["externalReferenceType"]: ref["name"] for ref in service_orders[0]["externalReference"]}
    assert refs["ProductOrder"] == order["id"]

    saga = (await client.get(f"/sagas/{service_orders[0]['id']}", headers=HEADERS)).json()
    assert [step["status"] for step in saga["steps"]] == ["succeeded"] * 3
    resource_orders = (await client.get("/tmf-api/resourceOrdering/v4/resourceOrder", headers=HEADERS)).json()
    assert resource_orders and resource_orders[0]["state"] == "completed"
    services = (await client.get("/tmf-api/serviceInventory/v4/service", headers=HEADERS)).json()
    assert services and {service["state"] for service in services} == {"active"}
    products = await products_of(client, "CUST-1")  # recorded by the inventory, one hop after
    assert [product["productOrderItem"][0]["productOrderId"] for product in products] == [order["id"]]

    for _ in range(100):  # billing reacts to the completion by choreography
        net = await ledger(platform).charges_minus_credits(order["id"])
        if net:
            break
        await asyncio.sleep(0.1)
    assert net > 0


async def test_a_service_order_is_read_as_of_a_time_over_http(client: httpx.AsyncClient) -> None:
    await wait_for(client, await place_order(client), {"completed", "failed"})
    listed = (await client.get("/tmf-api/serviceOrdering/v4/serviceOrder", headers=HEADERS)).json()
    href = f"/tmf-api/serviceOrdering/v4/serviceOrder/{listed[0]['id']}"
    now = datetime.now(UTC)
    current = await client.get(href, params={"asOf": now.isoformat()}, headers=HEADERS)
    assert current.status_code == 200 and current.json()["state"] == listed[0]["state"]
    before = await client.get(href, params={"asOf": (now - timedelta(days=1)).isoformat()}, headers=HEADERS)
    assert before.status_code == 404
    malformed = await client.get(href, params={"asOf": "yesterday"}, headers=HEADERS)
    assert malformed.status_code == 400 and "asOf" in malformed.text


async def test_a_failed_activation_is_compensated_and_fails_the_product_order(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    faults = await client.put(
        "/activation/faults", json={"failure_rate": 1.0, "failure_mode": "permanent"}, headers=HEADERS
    )
    assert faults.status_code == 200, faults.text
    href = await place_order(client)
    order = await wait_for(client, href, {"completed", "failed"})
    assert order["state"] == "failed"
    sagas = (await client.get("/sagas", headers=HEADERS)).json()
    assert sagas[0]["status"] == "failed"
    for _ in range(50):  # the release reply may trail the saga's end by a moment
        if await allocated_values(platform) == 0:
            break
        await asyncio.sleep(0.1)
    assert await allocated_values(platform) == 0, "a resource leaked after compensation"
    assert await ledger(platform).charges_minus_credits(order["id"]) == 0
    refused = await client.post(f"/sagas/{sagas[0]['id']}/retry", json={"reason": "try"}, headers=HEADERS)
    assert refused.status_code == 409  # nothing to retry on a failed saga
