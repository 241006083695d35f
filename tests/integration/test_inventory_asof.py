"""TMF637 ``asOf``: a customer's product inventory at a past moment, replayed from its history.

Orders are saved the way the ordering service saves them (the aggregate through
its repository) and their products recorded the way the inventory's consumer
records them (``record_ordered_products``), on SQLite and on PostgreSQL; then the
API is asked about moments between the orders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from strowger.cluster.plan import plan_cluster
from strowger.cluster.provision import deprovision, provision, schema_map
from strowger.components.database import borrowed_names
from strowger.components.inventory.api import PRODUCT_BASE_PATH, product_inventory_router
from strowger.components.inventory.products import record_ordered_products
from strowger.components.inventory.service import ProductInventory
from strowger.components.ordering.aggregate import ProductOrder
from strowger.events.envelope import Envelope
from strowger.store.aggregate import Repository
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import SqlEventStore, open_event_store
from strowger.store.postgres import PostgresDatabase
from strowger.tmf.resources import RESOURCE_TABLES

pytestmark = pytest.mark.integration

ORDER_TIME = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class NoSink:
    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        """The inventory's own events are not what this test is about."""


class Orders:
    """Places and completes product orders as the ordering service does; the inventory records them."""

    def __init__(self, database: Database, store: SqlEventStore) -> None:
        self.database = database
        self.repository = Repository(store, ProductOrder)
        self.inventory = ProductInventory(database, NoSink())

    async def complete(self, order_id: str, customer: str, items: list[dict[str, Any]]) -> datetime:
        """Place ``order_id`` and complete every item; returns a moment just after it completed."""
        body = {
            "relatedParty": [{"id": customer, "role": "Customer", "@referredType": "Individual"}],
            "productOrderItem": items,
        }
        order = ProductOrder.place(order_id, body, href=f"/po/{order_id}", now=ORDER_TIME, correlation_id="c")
        async with self.database.transaction() as tx:
            await self.repository.save(tx, order)
        order = await self.repository.load(order_id)
        order.start_fulfilment(ORDER_TIME)
        order.record_fulfilment([item["id"] for item in items], "completed", ORDER_TIME)
        async with self.database.transaction() as tx:
            await self.repository.save(tx, order)
        async with self.database.transaction() as tx:
            await record_ordered_products(tx, self.inventory, order.to_tmf())
        moment = datetime.now(UTC)
        await asyncio.sleep(0.002)  # the next order is recorded strictly after ``moment``
        return moment


def add(item_id: str, offering: str) -> dict[str, Any]:
    return {"id": item_id, "action": "add", "productOffering": {"id": offering, "name": offering.title()}}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    name = "sqlite_db" if request.param == "sqlite" else "postgres_db"
    db: Database = request.getfixturevalue(name)
    return db


@pytest.fixture
async def orders(database: Database) -> Orders:
    store = open_event_store(database)
    await store.setup()
    await database.create_tables(RESOURCE_TABLES)
    return Orders(database, store)


@pytest.fixture
async def client(database: Database, orders: Orders) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(product_inventory_router(database, NoSink()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def products(client: httpx.AsyncClient, customer: str, moment: datetime, **extra: str) -> Any:
    params = {"relatedParty.id": customer, "asOf": at(moment), **extra}
    response = await client.get(f"{PRODUCT_BASE_PATH}/product", params=params)
    assert response.status_code == 200, response.text
    return response


async def test_the_inventory_of_a_customer_at_each_past_moment(
    client: httpx.AsyncClient, orders: Orders
) -> None:
    before_anything = datetime.now(UTC)
    await asyncio.sleep(0.002)
    first = await orders.complete("O1", "C1", [add("1", "fibre"), add("2", "tv")])
    await orders.complete("O9", "C2", [add("1", "mobile")])  # another customer's: never shown to C1
    terminate = {"id": "1", "action": "delete", "product": {"id": "O1-2"}, "productOffering": {"id": "tv"}}
    second = await orders.complete("O2", "C1", [terminate, add("2", "voice")])

    assert (await products(client, "C1", before_anything)).json() == []

    then = await products(client, "C1", first)
    assert [(p["id"], p["status"]) for p in then.json()] == [("O1-1", "active"), ("O1-2", "active")]
    assert then.headers["X-Total-Count"] == "2"

    now = (await products(client, "C1", second)).json()
    assert {p["id"]: p["status"] for p in now} == {"O1-1": "active", "O1-2": "terminated", "O2-2": "active"}
    # Replayed from the history, each product is the document the live inventory holds for it.
    for product in now:
        live = await client.get(f"{PRODUCT_BASE_PATH}/product/{product['id']}")
        assert live.status_code == 200
        assert product == live.json()


async def test_fields_filters_paging_and_one_product(client: httpx.AsyncClient, orders: Orders) -> None:
    first = await orders.complete("O1", "C1", [add("1", "fibre"), add("2", "tv"), add("3", "voice")])
    await orders.complete("O2", "C1", [{"id": "1", "action": "delete", "product": {"id": "O1-1"}}])

    page = await products(client, "C1", first, fields="status", sort="-id", offset="1", limit="1")
    assert page.json() == [
        {"id": "O1-2", "href": f"{PRODUCT_BASE_PATH}/product/O1-2", "@type": "Product", "status": "active"}
    ]
    assert (page.headers["X-Total-Count"], page.headers["X-Result-Count"]) == ("3", "1")
    tv = await products(client, "C1", first, **{"productOffering.id": "tv"})
    assert [p["id"] for p in tv.json()] == ["O1-2"]

    one = await client.get(
        f"{PRODUCT_BASE_PATH}/product/O1-1", params={"asOf": at(first), "fields": "status"}
    )
    assert one.status_code == 200 and one.json()["status"] == "active"
    live = await client.get(f"{PRODUCT_BASE_PATH}/product/O1-1")
    assert live.json()["status"] == "terminated"
    early = datetime(2020, 1, 1, tzinfo=UTC)
    missing = await client.get(f"{PRODUCT_BASE_PATH}/product/O1-1", params={"asOf": at(early)})
    assert missing.status_code == 404


async def test_without_as_of_the_live_inventory_answers(client: httpx.AsyncClient, orders: Orders) -> None:
    await orders.complete("O1", "C1", [add("1", "fibre")])
    live = await client.get(f"{PRODUCT_BASE_PATH}/product", params={"relatedParty.id": "C1"})
    assert live.status_code == 200 and [p["id"] for p in live.json()] == ["O1-1"]
    spec = (await client.get(f"{PRODUCT_BASE_PATH}/openapi.json")).json()
    names = [p["name"] for p in spec["paths"][f"{PRODUCT_BASE_PATH}/product"]["get"]["parameters"]]
    assert "asOf" in names


async def test_a_product_deleted_through_tmf637_is_there_before_and_gone_after(
    client: httpx.AsyncClient, orders: Orders
) -> None:
    first = await orders.complete("O1", "C1", [add("1", "fibre"), add("2", "tv")])
    assert (await client.delete(f"{PRODUCT_BASE_PATH}/product/O1-2")).status_code == 204
    after = datetime.now(UTC)

    assert [p["id"] for p in (await products(client, "C1", first)).json()] == ["O1-1", "O1-2"]
    assert [p["id"] for p in (await products(client, "C1", after)).json()] == ["O1-1"]
    gone = await client.get(f"{PRODUCT_BASE_PATH}/product/O1-2", params={"asOf": at(after)})
    assert gone.status_code == 404


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", "2026-03-15T00:00:00"])
async def test_a_malformed_as_of_is_a_400_naming_it(client: httpx.AsyncClient, bad: str) -> None:
    for path in ("/product", "/product/O1-1"):
        response = await client.get(f"{PRODUCT_BASE_PATH}{path}", params={"asOf": bad})
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalidParameter" and "asOf" in body["message"]


# --- a split cluster: the inventory's own schema and role --------------------------------------


@pytest.fixture
async def inventory_role(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[Database, str]]:
    """The inventory component's database as a split cluster provisions it (no process started):
    its own schema and role, the names it borrows left to the supervisor's views; and ordering's URL."""
    plan = plan_cluster(tmp_path, database_url=postgres_url, bus_url="kafka://127.0.0.1:9092", instances=1)
    environments = await provision(plan)
    schemas = schema_map(plan)
    try:
        url = environments["inventory"]["STROWGER_DATABASE_URL"]
        borrowed = borrowed_names("inventory", schemas)
        async with PostgresDatabase(url, schema=schemas["inventory"], borrowed=borrowed) as database:
            await database.create_tables(RESOURCE_TABLES)
            yield database, schemas["ordering"]
    finally:
        await deprovision(plan)


def completed_order(order_id: str, customer: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A TMF622 order as its ProductOrderStateChangeEvent carries it once every item completed."""
    return {
        "id": order_id,
        "href": f"/po/{order_id}",
        "state": "completed",
        "orderDate": at(ORDER_TIME),
        "completionDate": at(datetime.now(UTC)),
        "relatedParty": [{"id": customer, "role": "Customer", "@referredType": "Individual"}],
        "productOrderItem": [{**item, "state": "completed"} for item in items],
    }


async def test_in_a_split_cluster_the_inventory_role_answers_as_of_from_its_own_schema(
    inventory_role: tuple[Database, str],
) -> None:
    database, ordering_schema = inventory_role
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ordering's data is out of reach
        await database.fetchall(f'SELECT order_id FROM "{ordering_schema}".order_list')  # noqa: S608
    inventory = ProductInventory(database, NoSink())
    moments = []
    orders = [
        completed_order("O1", "C1", [add("1", "fibre"), add("2", "tv")]),
        completed_order("O9", "C2", [add("1", "mobile")]),
        completed_order("O2", "C1", [{"id": "1", "action": "delete", "product": {"id": "O1-2"}}]),
    ]
    for order in orders:  # as the inventory-products consumer records them, in the inventory's schema
        async with database.transaction() as tx:
            await record_ordered_products(tx, inventory, order)
        moments.append(datetime.now(UTC))
        await asyncio.sleep(0.002)

    app = FastAPI()
    app.include_router(product_inventory_router(database, NoSink()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        then = (await products(client, "C1", moments[0])).json()
        now = (await products(client, "C1", moments[2])).json()
        one = await client.get(f"{PRODUCT_BASE_PATH}/product/O1-2", params={"asOf": at(moments[1])})
    assert [(p["id"], p["status"]) for p in then] == [("O1-1", "active"), ("O1-2", "active")]
    assert [(p["id"], p["status"]) for p in now] == [("O1-1", "active"), ("O1-2", "terminated")]
    assert one.status_code == 200 and one.json()["status"] == "active"
