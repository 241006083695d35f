"""Property-based API tests: schemathesis cases from each TMF API's served OpenAPI, run in-process.

Every operation of each API gets a few generated requests (valid and invalid
bodies, parameters, ids) sent through the ASGI transport to an application on
the ``sqlite_db`` fixture, after seeding one resource of each type so lists and
retrievals return real documents. Checks: no 5xx, and the response (status and
body) conforms to the document the API itself serves.

Hypothesis runs in a worker thread and submits each request to the test's
event loop, where the database and the application live.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from strowger.components.billing import CustomerBilling, customer_bill_router
from strowger.components.catalog import catalog_router
from strowger.components.events_api import event_router
from strowger.components.inventory import (
    product_inventory_router,
    resource_inventory_router,
    service_inventory_router,
)
from strowger.components.ordering.api import ordering_router
from strowger.components.ordering.service import OrderingService
from strowger.events.envelope import Envelope
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import open_event_store
from strowger.tmf.hubs import CallbackGuard

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 6
REQUEST_TIMEOUT = 30.0
CHECKS = [not_a_server_error, response_schema_conformance]

API_BASES = {
    "TMF620": "/tmf-api/productCatalogManagement/v4",
    "TMF622": "/tmf-api/productOrderingManagement/v4",
    "TMF637": "/tmf-api/productInventory/v4",
    "TMF638": "/tmf-api/serviceInventory/v4",
    "TMF639": "/tmf-api/resourceInventoryManagement/v4",
    "TMF678": "/tmf-api/customerBillManagement/v4",
    "TMF688": "/tmf-api/event/v4",
}
SEEDS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "TMF620": [("productOffering", {"name": "Fibre"}), ("catalog", {"name": "Main"})],
    "TMF622": [
        (
            "productOrder",
            {"productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-1"}}]},
        ),
    ],
    "TMF637": [("product", {"name": "Fibre 1G", "status": "active"})],
    "TMF638": [("service", {"name": "Access", "state": "active", "serviceSpecification": {"id": "s"}})],
    "TMF639": [("resource", {"name": "ONT-1", "resourceStatus": "available"})],
    "TMF688": [("topic", {"name": "ext.alarms"})],
}


class DiscardingSink:
    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        """Events are covered by the per-API tests."""


@pytest.fixture
async def client(sqlite_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    sink, guard = DiscardingSink(), CallbackGuard()
    app = FastAPI()
    for router in (
        catalog_router,
        product_inventory_router,
        service_inventory_router,
        resource_inventory_router,
        customer_bill_router,
        event_router,
    ):
        app.include_router(router(sqlite_db, sink, guard))
    ordering = OrderingService(sqlite_db, open_event_store(sqlite_db), sink)
    await ordering.setup()
    app.include_router(ordering_router(ordering, sqlite_db, guard))
    billing = CustomerBilling(sqlite_db, sink)
    await billing.ensure_tables()
    async with sqlite_db.transaction() as tx:
        await billing.record_rate(tx, {"id": "rate-1", "taxIncludedAmount": {"unit": "EUR", "value": 5}})
        await billing.record_bill(
            tx, {"id": "bill-1", "billNo": "1", "amountDue": {"unit": "EUR", "value": 5}}
        )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield http


def _request_kwargs(case: Any) -> dict[str, Any]:
    """The case as ``httpx`` request arguments (schemathesis serialises for ``requests``)."""
    kwargs = case.as_transport_kwargs(base_url="http://test")
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers"),
        "params": kwargs.get("params"),
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, bytes) else str(data).encode()
    return request


def _aim_at_seeds(case: Any, seeded: dict[str, str]) -> None:
    """Point the case's path ids at seeded resources, so PATCH and GET reach real documents."""
    parameters = case.path_parameters or {}
    segments = case.operation.path.split("/")
    if "topicId" in parameters and "topic" in seeded:
        parameters["topicId"] = seeded["topic"]
    if "id" in parameters and len(segments) > 1 and segments[-2] in seeded:
        parameters["id"] = seeded[segments[-2]]


def _exercise(
    operation: Any, seeded: dict[str, str], send: Callable[[dict[str, Any]], httpx.Response]
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), aim=st.booleans())
    def run(case: Any, aim: bool) -> None:
        if aim:
            _aim_at_seeds(case, seeded)
        case.validate_response(send(_request_kwargs(case)), checks=CHECKS)

    run()


@pytest.mark.parametrize("api", sorted(API_BASES))
async def test_api_conforms_to_its_openapi(client: httpx.AsyncClient, api: str) -> None:
    base = API_BASES[api]
    seeded = {"customerBill": "bill-1", "appliedCustomerBillingRate": "rate-1"}
    for resource, body in SEEDS.get(api, []):
        response = await client.post(f"{base}/{resource}", json=body)
        assert response.status_code == 201, response.text
        seeded[resource] = response.json()["id"]
    if "productOrder" in seeded:  # a cancellation needs an order to name
        cancel = {"productOrder": {"id": seeded["productOrder"]}}
        response = await client.post(f"{base}/cancelProductOrder", json=cancel)
        assert response.status_code == 201, response.text
        seeded["cancelProductOrder"] = response.json()["id"]
    document = (await client.get(f"{base}/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    loop = asyncio.get_running_loop()

    def send(request: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(client.request(**request), loop).result(REQUEST_TIMEOUT)

    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{api} serves no operation"
    for operation in operations:
        try:
            await asyncio.to_thread(_exercise, operation, seeded, send)
        except Exception as exc:  # collect every failing operation, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
