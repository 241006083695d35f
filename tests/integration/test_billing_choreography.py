"""Billing by choreography through the real consumer runtime on the embedded bus (SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import ConsumerRunner
from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.charging import BillingLedger
from strowger.components.billing.consumers import billing_consumer
from strowger.components.catalog.seed import load_sample_catalog
from strowger.events.envelope import Envelope, encode
from strowger.events.topics import ALL_TOPICS, INVENTORY_EVENTS, ORDERING_EVENTS
from strowger.store.db import Database, Transaction
from tests.contract.runtime_contract import wait_until

pytestmark = pytest.mark.integration

FIBRE_PRICES = Decimal("94.00")  # 45 monthly + 49 activation


class NullSink:
    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        return None


@dataclass
class Billing:
    database: Database
    bus: EmbeddedBus
    ledger: BillingLedger
    runner: ConsumerRunner

    async def publish(self, *envelopes: Envelope, topic: str = ORDERING_EVENTS.name) -> None:
        await self.bus.publish([encode(envelope, topic) for envelope in envelopes])

    async def settle(self, handled: int) -> None:
        stats = self.runner.stats

        async def done() -> bool:
            return stats.applied + stats.duplicates + stats.dead >= handled

        await wait_until(done, f"{handled} billing events handled")

    async def rates(self) -> list[dict[str, Any]]:
        async with self.database.snapshot() as tx:
            billing = self.ledger.billing.rates
            rows = await tx.fetchall(
                "SELECT id FROM tmf_resource WHERE collection = ?",
                ("customerBillManagement/appliedCustomerBillingRate",),
            )
            return [dict(await billing.get(tx, row[0]) or {}) for row in rows]


@pytest.fixture
async def billing(sqlite_db: Database) -> AsyncIterator[Billing]:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await bus.ensure_topics(ALL_TOPICS)
    await load_sample_catalog(sqlite_db, NullSink())
    ledger = BillingLedger(sqlite_db, CustomerBilling(sqlite_db, NullSink()))
    await ledger.ensure_tables()
    runner = ConsumerRunner(billing_consumer(ledger), bus, sqlite_db, fetch_timeout=0.2)
    task = asyncio.create_task(runner.run())
    await runner.started.wait()
    yield Billing(sqlite_db, bus, ledger, runner)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await bus.stop()


def order_event(order_id: str, state: str, *items: dict[str, Any]) -> Envelope:
    order = {
        "id": order_id,
        "href": f"/tmf-api/productOrderingManagement/v4/productOrder/{order_id}",
        "state": state,
        "billingAccount": {"id": "BA-1"},
        "completionDate": "2025-03-31T10:00:00.000Z",
        "productOrderItem": list(items),
    }
    return Envelope(
        event_type="ProductOrderStateChangeEvent", payload={"productOrder": order}, entity_key=order_id
    )


def item(item_id: str, offering: str, state: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "action": "add", "state": state, "productOffering": {"id": offering}}


async def test_a_completed_order_is_charged_its_prices_once_despite_duplicates(billing: Billing) -> None:
    completed = order_event("ORD-1", "completed", item("1", "PO-FIBRE-500"))
    # The same event twice (a redelivery), then a different event saying the same thing (a replay).
    await billing.publish(completed, completed, replace(completed, event_id="another-event-id"))
    await billing.settle(3)

    assert billing.runner.stats.duplicates >= 1
    assert await billing.ledger.charges_minus_credits("ORD-1") == FIBRE_PRICES
    rates = await billing.rates()
    assert len(rates) == 2
    assert {rate["appliedBillingRateType"] for rate in rates} == {"recurringCharge", "oneTimeCharge"}
    monthly = next(rate for rate in rates if rate["appliedBillingRateType"] == "recurringCharge")
    assert monthly["taxExcludedAmount"] == {"unit": "EUR", "value": 45.0}
    assert monthly["billingAccount"]["id"] == "BA-1" and monthly["product"]["id"] == "ORD-1-1"
    assert monthly["isBilled"] is False
    assert monthly["periodCoverage"] == {
        "startDateTime": "2025-03-31T10:00:00.000Z",
        "endDateTime": "2025-04-30T10:00:00.000Z",
    }


async def test_a_cancelled_charged_order_is_credited_to_zero_never_deleted(billing: Billing) -> None:
    await billing.publish(
        order_event("ORD-2", "completed", item("1", "PO-BUNDLE-FIBRE-MOBILE")),
        order_event("ORD-2", "cancelled", item("1", "PO-BUNDLE-FIBRE-MOBILE", state="cancelled")),
        order_event("ORD-2", "cancelled", item("1", "PO-BUNDLE-FIBRE-MOBILE", state="cancelled")),
    )
    await billing.settle(3)

    totals = (await billing.ledger.totals("ORD-2"))["EUR"]
    assert totals.charges == Decimal("109.00") and totals.credits == Decimal("109.00")
    assert await billing.ledger.charges_minus_credits("ORD-2") == Decimal("0.00")
    rates = await billing.rates()
    assert len(rates) == 10  # five charges, five credits: the second cancellation added nothing
    credits = [rate for rate in rates if rate["appliedBillingRateType"] == "productAlteration"]
    assert len(credits) == 5 and all("cancelled" in rate["description"] for rate in credits)
    async with billing.database.transaction() as tx:
        assert await billing.ledger.credit_order(tx, "ORD-2", "saga compensation") == 0


async def test_a_partial_order_pays_for_its_completed_items_and_a_termination_credits_the_fees(
    billing: Billing,
) -> None:
    await billing.publish(
        order_event("ORD-3", "partial", item("1", "PO-FIBRE-500"), item("2", "PO-MOBILE-20", state="failed"))
    )
    await billing.settle(1)
    assert await billing.ledger.charges_minus_credits("ORD-3") == FIBRE_PRICES

    terminated = {"id": "ORD-3-1", "status": "terminated", "productOffering": {"id": "PO-FIBRE-500"}}
    event = Envelope(
        event_type="ProductStateChangeEvent", payload={"product": terminated}, entity_key="ORD-3-1"
    )
    await billing.publish(event, topic=INVENTORY_EVENTS.name)
    await billing.settle(2)
    # The monthly fee comes back; the activation was earned.
    assert await billing.ledger.charges_minus_credits("ORD-3") == Decimal("49.00")


async def test_credit_order_is_the_saga_compensation_and_is_idempotent(billing: Billing) -> None:
    await billing.publish(order_event("ORD-4", "completed", item("1", "PO-STATIC-IP")))
    await billing.settle(1)
    async with billing.database.transaction() as tx:
        assert await billing.ledger.credit_order(tx, "ORD-4", "saga compensation") == 1
    async with billing.database.transaction() as tx:
        assert await billing.ledger.credit_order(tx, "ORD-4", "saga compensation") == 0
    assert await billing.ledger.charges_minus_credits("ORD-4") == Decimal("0.00")
    assert (await billing.ledger.net_by_order()) == {"ORD-4": Decimal("0.00")}


async def test_an_order_for_an_unknown_offering_is_dead_lettered_not_charged(billing: Billing) -> None:
    await billing.publish(order_event("ORD-5", "completed", item("1", "PO-NOT-THERE")))
    await billing.settle(1)
    assert billing.runner.stats.dead == 1
    assert await billing.ledger.totals("ORD-5") == {}
