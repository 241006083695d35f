"""TMF678 over HTTP (in-process ASGI) on SQLite, with bills and rates recorded by the billing write path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from strowger.components.billing import CustomerBilling, customer_bill_router
from strowger.errors import InvalidStateTransition, SchemaViolation
from strowger.events.envelope import Envelope
from strowger.store.db import Database, Transaction

pytestmark = pytest.mark.integration

BASE = "/tmf-api/customerBillManagement/v4"
EUR = {"unit": "EUR", "value": 29.99}


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
async def billing(sqlite_db: Database, sink: RecordingSink) -> CustomerBilling:
    billing = CustomerBilling(sqlite_db, sink)
    await billing.ensure_tables()
    return billing


@pytest.fixture
async def client(sqlite_db: Database, sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(customer_bill_router(sqlite_db, sink))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield http


async def record(sqlite_db: Database, billing: CustomerBilling) -> dict[str, Any]:
    async with sqlite_db.transaction() as tx:
        for index, account in enumerate(("BA-1", "BA-1", "BA-2")):
            await billing.record_rate(
                tx,
                {
                    "id": f"rate-{index}",
                    "appliedBillingRateType": "recurringCharge",
                    "billingAccount": {"id": account},
                    "taxIncludedAmount": EUR,
                    "isBilled": False,
                },
            )
        bill = await billing.record_bill(
            tx, {"id": "bill-1", "billNo": "2024-0001", "billingAccount": {"id": "BA-1"}, "amountDue": EUR}
        )
    return bill


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == str(status) and body["@type"] == "Error"
    return body


async def test_recorded_rates_and_bills_are_readable(
    client: httpx.AsyncClient, sqlite_db: Database, billing: CustomerBilling, sink: RecordingSink
) -> None:
    bill = await record(sqlite_db, billing)
    assert bill["state"] == "new" and bill["href"] == f"{BASE}/customerBill/bill-1"
    assert (await client.get(bill["href"])).json() == bill
    response = await client.get(f"{BASE}/appliedCustomerBillingRate?billingAccount.id=BA-1&fields=id")
    assert [rate["id"] for rate in response.json()] == ["rate-0", "rate-1"]
    assert response.headers["x-total-count"] == "2"
    assert_error(await client.get(f"{BASE}/appliedCustomerBillingRate/nope"), 404)
    assert [(topic, kind) for topic, kind in ((t, e.event_type) for t, e in sink.events)] == [
        ("bss.billing.events", "CustomerBillCreateEvent")
    ]


async def test_recording_is_idempotent(
    sqlite_db: Database, billing: CustomerBilling, sink: RecordingSink
) -> None:
    await record(sqlite_db, billing)
    await record(sqlite_db, billing)
    assert sink.types() == ["CustomerBillCreateEvent"]
    with pytest.raises(SchemaViolation):
        async with sqlite_db.transaction() as tx:
            await billing.record_rate(tx, {"id": "rate-x", "isBilled": "no"})


async def test_only_the_spec_operations_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{BASE}/customerBill", json={})).status_code == 405
    assert (await client.post(f"{BASE}/appliedCustomerBillingRate", json={})).status_code == 405
    assert (await client.delete(f"{BASE}/customerBill/x")).status_code == 405
    assert (await client.patch(f"{BASE}/appliedCustomerBillingRate/x", json={})).status_code == 405
    spec = (await client.get(f"{BASE}/openapi.json")).json()
    assert set(spec["paths"][f"{BASE}/customerBill/{{id}}"]) == {"get", "patch"}
    assert set(spec["paths"][f"{BASE}/appliedCustomerBillingRate"]) == {"get"}


async def test_patch_changes_only_state_and_bill_cycle(
    client: httpx.AsyncClient, sqlite_db: Database, billing: CustomerBilling, sink: RecordingSink
) -> None:
    bill = await record(sqlite_db, billing)
    body = assert_error(
        await client.patch(bill["href"], json={"amountDue": {"unit": "EUR", "value": 0}}), 400
    )
    assert body["code"] == "readOnlyField" and "amountDue" in body["message"]
    assert_error(await client.patch(bill["href"], json={"state": "paid"}), 400)
    response = await client.patch(bill["href"], json={"state": "validated", "billCycle": {"id": "BC-1"}})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "validated" and response.json()["billCycle"] == {"id": "BC-1"}
    assert sink.types()[-1] == "CustomerBillStateChangeEvent"
    error = assert_error(await client.patch(bill["href"], json={"state": "settled"}), 409)
    assert error["code"] == "invalidStateTransition"
    assert_error(await client.patch(f"{BASE}/customerBill/nope", json={"state": "onHold"}), 404)


async def test_bill_state_moves_from_the_billing_component(
    sqlite_db: Database, billing: CustomerBilling, sink: RecordingSink
) -> None:
    await record(sqlite_db, billing)
    async with sqlite_db.transaction() as tx:
        for state in ("validated", "sent", "partiallyPaid", "settled"):
            await billing.set_bill_state(tx, "bill-1", state)
    assert sink.types().count("CustomerBillStateChangeEvent") == 4
    with pytest.raises(InvalidStateTransition):
        async with sqlite_db.transaction() as tx:
            await billing.set_bill_state(tx, "bill-1", "new")
