"""The whole platform's HTTP app, built by the composition root as `strowger run all` builds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from strowger.app import create_app
from strowger.bootstrap import bootstrap
from strowger.security import SecuritySettings, assert_all_routes_protected, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings

pytestmark = pytest.mark.e2e

ADMIN_KEY = "stw_test-admin-key"


def security() -> SecuritySettings:
    entry = ApiKeyEntry(name="admin", sha256=hash_api_key(ADMIN_KEY), scopes=("admin",))
    return SecuritySettings(api_keys=(entry,), api_keys_file=None)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/strowger.db")
    app = create_app(bootstrap(settings), security())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger") as client:
            yield client


async def test_every_route_but_health_needs_credentials(tmp_path: Path) -> None:
    app = create_app(bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db")), security())
    checked = await assert_all_routes_protected(app)
    assert checked > 30  # the catalog, hub, DLQ, registry and trace routes are all there


async def test_the_index_links_every_api(client: httpx.AsyncClient) -> None:
    index = await client.get("/", headers={"X-API-Key": ADMIN_KEY})
    assert index.status_code == 200
    assert "/tmf-api/productCatalogManagement/v4/openapi.json" in index.text
    assert "/asyncapi.json" in index.text


async def test_a_related_party_without_its_referred_type_is_a_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer"}],  # TMF622 RelatedParty requires @referredType
    }
    refused = await client.post(
        "/tmf-api/productOrderingManagement/v4/productOrder", json=body, headers={"X-API-Key": ADMIN_KEY}
    )
    assert refused.status_code == 400, refused.text
    assert "@referredType" in refused.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/tmf-api/productOrderingManagement/v4/nothing", 404, "notFound"),
        ("GET", "/nothing/at/all", 404, "notFound"),
        ("PUT", "/tmf-api/productOrderingManagement/v4/productOrder/x", 405, "methodNotAllowed"),
        ("PUT", "/tmf-api/productCatalogManagement/v4/productOffering/x", 405, "methodNotAllowed"),
    ],
)
async def test_an_unknown_path_or_method_is_a_tmf_error(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    answer = await client.request(method, path, headers={"X-API-Key": ADMIN_KEY})
    assert answer.status_code == status
    body = answer.json()
    assert body["code"] == code and body["status"] == str(status) and body["@type"] == "Error"
    assert body["reason"] and path in body["message"]
    if status == 405:
        assert "GET" in answer.headers["allow"]


async def test_health_is_open_and_metrics_need_a_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 401
    metrics = await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})
    assert metrics.status_code == 200
    assert "strowger_outbox_backlog" in metrics.text


async def test_a_catalog_write_travels_through_the_outbox_to_the_bus(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/tmf-api/productCatalogManagement/v4/productOffering",
        json={"name": "Fibre 500"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert created.status_code == 201, created.text
    assert created.headers["X-Correlation-ID"]
    assert created.json()["lifecycleStatus"] == "In study"


async def wait_for_state(client: httpx.AsyncClient, href: str, states: set[str]) -> dict[str, object]:
    for _ in range(100):
        order = (await client.get(href, headers={"X-API-Key": ADMIN_KEY})).json()
        if order["state"] in states:
            return dict(order)
        await asyncio.sleep(0.1)
    pytest.fail(f"order never reached {states}: {order['state']}")


async def test_an_order_for_a_sample_offering_is_validated_asynchronously(client: httpx.AsyncClient) -> None:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(
        "/tmf-api/productOrderingManagement/v4/productOrder", json=body, headers={"X-API-Key": ADMIN_KEY}
    )
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "acknowledged"
    # Validation passes it on to fulfilment, which may already have completed it.
    order = await wait_for_state(client, created.headers["Location"], {"inProgress", "completed", "rejected"})
    assert order["state"] in ("inProgress", "completed"), order


async def test_an_order_for_an_unknown_offering_is_rejected_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "NO-SUCH-OFFER"}}],
        "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
        "billingAccount": {"id": "BA-1"},
    }
    created = await client.post(
        "/tmf-api/productOrderingManagement/v4/productOrder", json=body, headers={"X-API-Key": ADMIN_KEY}
    )
    order = await wait_for_state(client, created.headers["Location"], {"inProgress", "completed", "rejected"})
    assert order["state"] == "rejected"
    assert "NO-SUCH-OFFER" in str(order.get("note"))
