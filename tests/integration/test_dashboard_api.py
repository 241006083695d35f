"""The dashboard's data, discovered from what really happened, and who may read it.

Flow discovery and saga health run on both databases; the HTTP tests run the
whole platform (embedded bus) with the dashboard installed and real orders.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from strowger.app import create_app
from strowger.bootstrap import bootstrap
from strowger.events.envelope import Category, Envelope, encode
from strowger.ops.dashboard.data import discover_flow, saga_health
from strowger.saga import SAGA_TABLES, Call, Command, SagaDefinition, SagaEngine, SagaRegistry, Step
from strowger.saga import OutboxSink as SagaOutboxSink
from strowger.security import SecuritySettings, assert_all_routes_protected, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.inbox import INBOX_TABLES, Inbox
from strowger.store.outbox import OUTBOX_TABLES, Outbox

pytestmark = pytest.mark.integration

ADMIN_KEY = "stw_dashboard-admin"
OPERATOR_KEY = "stw_dashboard-operator"
READER_KEY = "stw_dashboard-reader"

PROBE = SagaDefinition(
    "probe",
    steps=(
        Step(
            "reserve",
            Call(
                lambda context: Command("oss.resource.commands", "ProbeReserve", {"id": context.request_id}),
                "ProbeReserved",
                "ProbeReserveFailed",
                timeout=timedelta(minutes=5),
            ),
        ),
    ),
)


def event(event_type: str, key: str) -> Envelope:
    return Envelope(
        event_type=event_type,
        payload={"productOrder": {"id": key}},
        entity_key=key,
        category=Category.DOMAIN,
        producer="ordering",
    )


async def publish(database: Database, topic: str, count: int) -> None:
    async with database.transaction() as tx:
        await Outbox().add(
            tx, [encode(event("ProductOrderCreateEvent", f"PO-{i}"), topic) for i in range(count)]
        )


class DiscoveryOnBothDatabases:
    @pytest.fixture
    def database(self) -> Database:
        raise NotImplementedError

    async def test_edges_come_from_the_outbox_with_rates_over_the_window(self, database: Database) -> None:
        await database.create_tables(OUTBOX_TABLES, INBOX_TABLES)
        await publish(database, "bss.ordering.events", 5)
        flow = (await discover_flow(database, [], window=10.0)).to_json()
        edges = {(e["source"], e["target"]): e for e in flow["edges"]}
        edge = edges[("producer:ordering", "topic:bss.ordering.events")]
        assert edge["total"] == 5
        assert edge["rate"] == pytest.approx(0.5)
        roles = {node["id"]: node["role"] for node in flow["nodes"]}
        assert roles == {"producer:ordering": "producer", "topic:bss.ordering.events": "topic"}

    async def test_old_events_count_for_discovery_but_not_for_the_rate(self, database: Database) -> None:
        await database.create_tables(OUTBOX_TABLES, INBOX_TABLES)
        await publish(database, "bss.ordering.events", 3)
        later = time.time() + 60  # a minute on: still within the hour, outside the 10 s window
        flow = (await discover_flow(database, [], window=10.0, now=later)).to_json()
        [edge] = flow["edges"]
        assert (edge["total"], edge["rate"]) == (3, 0.0)
        hours_later = (
            await discover_flow(database, [], window=10.0, horizon=3600, now=later + 7200)
        ).to_json()
        assert hours_later["edges"] == []

    async def test_the_inbox_gives_each_consumer_its_rate(self, database: Database) -> None:
        await database.create_tables(OUTBOX_TABLES, INBOX_TABLES)
        async with database.transaction() as tx:
            for number in range(4):
                await Inbox().record(tx, "billing", f"event-{number}")
        flow = (await discover_flow(database, [], window=2.0)).to_json()
        assert flow["consumerRates"] == {"billing": 2.0}

    async def test_saga_health_shows_a_running_saga_on_its_step(self, database: Database) -> None:
        await database.create_tables(SAGA_TABLES, OUTBOX_TABLES)
        engine = SagaEngine(SagaRegistry([PROBE]), SagaOutboxSink(Outbox()))
        async with database.transaction() as tx:
            await engine.start(tx, "probe", {}, saga_id="saga-1", entity_key="PO-1")
        health = await saga_health(database)
        assert [(s["sagaId"], s["status"], s["step"]) for s in health["open"]] == [
            ("saga-1", "running", "reserve")
        ]
        assert health["inFlight"][0]["count"] == 1
        assert health["types"][0]["sagaType"] == "probe"
        assert health["types"][0]["compensationRate"] == 0.0
        assert (health["stuck"], health["quarantined"]) == (0, [])


class TestDiscoverySqlite(DiscoveryOnBothDatabases):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db


class TestDiscoveryPostgres(DiscoveryOnBothDatabases):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db


# --- over HTTP, the whole platform ----------------------------------------------------------------


def security() -> SecuritySettings:
    def key(name: str, secret: str, *scopes: str) -> ApiKeyEntry:
        return ApiKeyEntry(name=name, sha256=hash_api_key(secret), scopes=scopes)

    keys = (
        key("admin", ADMIN_KEY, "admin"),
        key("operator", OPERATOR_KEY, "operator"),
        key("reader", READER_KEY, "*:read"),
    )
    return SecuritySettings(api_keys=keys, api_keys_file=None)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))  # installs the dashboard
    app = create_app(platform, security())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger") as client:
            yield client


async def test_the_page_is_public_and_self_contained(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert "uPlot" in page.text and "/dashboard/api/overview" in page.text
    assert "<script src" not in page.text and "stylesheet" not in page.text  # works offline: nothing fetched
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (await client.post("/dashboard")).status_code == 401


async def test_the_data_needs_the_operator_scope(client: httpx.AsyncClient) -> None:
    assert (await client.get("/dashboard/api/overview")).status_code == 401
    assert (await client.get("/dashboard/api/overview", headers={"X-API-Key": READER_KEY})).status_code == 403
    response = await client.get("/dashboard/api/overview", headers={"X-API-Key": OPERATOR_KEY})
    assert response.status_code == 200
    assert set(response.json()) >= {"flow", "sagas", "lag", "deadLetters", "alerts"}


async def test_the_saga_overview_api_gives_percentiles_per_order_type_and_a_rolling_window(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/dashboard/api/sagas", headers={"X-API-Key": READER_KEY})).status_code == 403
    operator = {"X-API-Key": OPERATOR_KEY}
    response = await client.get("/dashboard/api/sagas", params={"compensationWindow": 60}, headers=operator)
    assert response.status_code == 200
    assert set(response.json()) >= {"types", "durations", "inFlight", "stuck", "open", "quarantined"}
    refused = await client.get("/dashboard/api/sagas", params={"compensationWindow": 0}, headers=operator)
    assert refused.status_code == 422  # a clear error, not a 500
    assert "compensationWindow" in refused.text


async def test_every_other_route_still_needs_credentials(tmp_path: Path) -> None:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))  # installs the dashboard
    await assert_all_routes_protected(create_app(platform, security()))


async def test_the_index_links_the_dashboard(client: httpx.AsyncClient) -> None:
    index = await client.get("/", headers={"X-API-Key": OPERATOR_KEY})
    assert 'href="/dashboard"' in index.text


ORDER = {
    "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
    "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
    "billingAccount": {"id": "BA-1"},
}


async def overview_when(client: httpx.AsyncClient, ready: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(60):
        body = (await client.get("/dashboard/api/overview", headers={"X-API-Key": ADMIN_KEY})).json()
        if ready(body):
            return body
        await asyncio.sleep(0.25)
    pytest.fail(f"the dashboard never showed it: {body['flow']}")


async def test_orders_draw_the_flow_from_the_api_to_the_consumers(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        created = await client.post(
            "/tmf-api/productOrderingManagement/v4/productOrder", json=ORDER, headers={"X-API-Key": ADMIN_KEY}
        )
        assert created.status_code == 201, created.text

    def consumed(body: dict[str, Any]) -> bool:
        return any(rate > 0 for rate in body["flow"]["consumerRates"].values())

    body = await overview_when(client, consumed)
    edges = {(e["source"], e["target"]): e for e in body["flow"]["edges"]}
    published = edges[("producer:ordering", "topic:bss.ordering.events")]
    assert published["total"] >= 3 and published["rate"] > 0
    consumers = {target for source, target in edges if source == "topic:bss.ordering.events"}
    assert consumers, edges  # the ordering consumers subscribed to the topic are on the map
    assert all(entry["lag"] >= 0 for entry in body["lag"])
    assert body["deadLetters"]["counts"].get("dead", 0) == 0
