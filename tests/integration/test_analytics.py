"""Order analytics through the real consumer runtime on the embedded bus (SQLite), and its HTTP read API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import ConsumerRunner
from strowger.components.analytics.api import analytics_router
from strowger.components.analytics.consumer import analytics_consumer
from strowger.components.analytics.view import ANALYTICS_TABLES, OrderAnalytics, percentile
from strowger.components.catalog.seed import load_sample_catalog
from strowger.events.envelope import Envelope, encode
from strowger.events.topics import ALL_TOPICS, ORDERING_EVENTS
from strowger.store.db import Database, Transaction
from tests.contract.runtime_contract import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class NullSink:
    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        return None


@pytest.fixture
async def runner(sqlite_db: Database) -> AsyncIterator[ConsumerRunner]:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await bus.ensure_topics(ALL_TOPICS)
    await load_sample_catalog(sqlite_db, NullSink())
    await sqlite_db.create_tables(ANALYTICS_TABLES)
    runner = ConsumerRunner(analytics_consumer(), bus, sqlite_db, fetch_timeout=0.2)
    task = asyncio.create_task(runner.run())
    await runner.started.wait()
    yield runner
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await bus.stop()


def event(
    order_id: str, event_type: str, state: str, offering: str, at: datetime, item_state: str
) -> Envelope:
    order: dict[str, Any] = {
        "id": order_id,
        "state": state,
        "orderDate": T0.isoformat(),
        "billingAccount": {"id": "BA-1"},
        "productOrderItem": [
            {"id": "1", "action": "add", "state": item_state, "productOffering": {"id": offering}}
        ],
    }
    if state == "completed":
        order["completionDate"] = at.isoformat()
    return Envelope(
        event_type=event_type, payload={"productOrder": order}, entity_key=order_id, event_time=at
    )


async def test_counts_durations_and_revenue_per_offering(runner: ConsumerRunner, sqlite_db: Database) -> None:
    events = []
    for n, minutes in enumerate((10, 20, 30, 40)):
        order_id = f"ORD-{n}"
        events.append(
            event(order_id, "ProductOrderCreateEvent", "acknowledged", "PO-FIBRE-500", T0, "acknowledged")
        )
        done = T0 + timedelta(minutes=minutes)
        events.append(
            event(order_id, "ProductOrderStateChangeEvent", "completed", "PO-FIBRE-500", done, "completed")
        )
    rejected = event("ORD-R", "ProductOrderStateChangeEvent", "rejected", "PO-MOBILE-20", T0, "rejected")
    late = event("ORD-0", "ProductOrderStateChangeEvent", "inProgress", "PO-FIBRE-500", T0, "inProgress")
    events += [rejected, late]  # ``late`` is older than ORD-0's completion: ignored
    await runner.bus.publish([encode(envelope, ORDERING_EVENTS.name) for envelope in events])

    async def handled() -> bool:
        return runner.stats.applied >= len(events)

    await wait_until(handled, "every order event applied")
    app = FastAPI()
    app.include_router(analytics_router(OrderAnalytics(sqlite_db)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        response = await http.get("/analytics/orders")
    assert response.status_code == 200
    body = response.json()
    assert body["ordersByState"] == {"completed": 4, "rejected": 1}
    assert body["byOffering"] == [
        {
            "productOffering": {"id": "PO-FIBRE-500"},
            "state": "completed",
            "items": 4,
            "revenue": {"unit": "EUR", "value": 376.0},
        },
        {
            "productOffering": {"id": "PO-MOBILE-20"},
            "state": "rejected",
            "items": 1,
            "revenue": {"unit": "EUR", "value": 0.0},
        },
    ]
    assert body["duration"] == {"completed": 4, "p50": 1200.0, "p95": 2400.0}
    assert body["revenue"] == {"unit": "EUR", "value": 376.0}


def test_nearest_rank_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0], 95) == 1.0
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
