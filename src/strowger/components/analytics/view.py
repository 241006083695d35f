"""Order analytics: a read model fed by ordering's events, with no change to any publisher.

Two tables: one row per order (state, when it was acknowledged and completed)
and one per order item (offering, item state, revenue once completed). A
notification older than the one already applied to an order is ignored, so
a replay or a redelivery cannot move an order back.

Revenue is what the catalog's prices (``billing.pricing``) make of an order's
completed ``add`` items: one-off fees plus the first period of recurring ones,
net of bundle discounts. Durations are acknowledged → completed, in seconds;
percentiles are nearest-rank over completed orders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from strowger.components.billing.charging import read_price_book
from strowger.components.billing.pricing import UnpricedItem, charge_lines
from strowger.store.db import Database, TableSet, Transaction

log = logging.getLogger("strowger.analytics")

Document = Mapping[str, Any]

_ORDERS = """CREATE TABLE IF NOT EXISTS analytics_order (
            order_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_event_time {real} NOT NULL,
            acknowledged_at {real}, completed_at {real})"""
_ITEMS = """CREATE TABLE IF NOT EXISTS analytics_order_item (
            order_id TEXT NOT NULL, item_id TEXT NOT NULL, offering_id TEXT NOT NULL, state TEXT NOT NULL,
            revenue_cents BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (order_id, item_id))"""

ANALYTICS_TABLES = TableSet(
    name="analytics",
    sqlite=[_ORDERS.format(real="REAL"), _ITEMS],
    postgresql=[_ORDERS.format(real="DOUBLE PRECISION"), _ITEMS],
)


@dataclass(frozen=True, slots=True)
class OfferingStateCount:
    offering_id: str
    state: str
    items: int
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class Durations:
    count: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class OrderAnalyticsSummary:
    orders_by_state: Mapping[str, int]
    by_offering: Sequence[OfferingStateCount]
    duration: Durations
    revenue: Decimal
    unit: str = "EUR"

    def to_json(self) -> dict[str, Any]:
        return {
            "ordersByState": dict(self.orders_by_state),
            "byOffering": [
                {
                    "productOffering": {"id": row.offering_id},
                    "state": row.state,
                    "items": row.items,
                    "revenue": {"unit": self.unit, "value": float(row.revenue)},
                }
                for row in self.by_offering
            ],
            "duration": {
                "completed": self.duration.count,
                "p50": self.duration.p50,
                "p95": self.duration.p95,
            },
            "revenue": {"unit": self.unit, "value": float(self.revenue)},
        }


async def apply_order(tx: Transaction, order: Document, event_type: str, event_time: datetime) -> bool:
    """Fold one ProductOrder notification in; False if a newer one was already applied."""
    order_id = str(order["id"])
    moment = event_time.timestamp()
    state = str(order.get("state") or "")
    row = await tx.fetchone("SELECT last_event_time FROM analytics_order WHERE order_id = ?", (order_id,))
    if row is not None and float(row[0]) > moment:
        return False
    acknowledged = _time(order.get("orderDate")) or (
        moment if event_type == "ProductOrderCreateEvent" else None
    )
    completed = (_time(order.get("completionDate")) or moment) if state == "completed" else None
    if row is None:
        await tx.execute(
            "INSERT INTO analytics_order (order_id, state, last_event_time, acknowledged_at, completed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, state, moment, acknowledged, completed),
        )
    else:
        await tx.execute(
            "UPDATE analytics_order SET state = ?, last_event_time = ?,"
            " acknowledged_at = COALESCE(acknowledged_at, ?), completed_at = COALESCE(completed_at, ?)"
            " WHERE order_id = ?",
            (state, moment, acknowledged, completed, order_id),
        )
    await _apply_items(tx, order_id, order, state)
    return True


async def _apply_items(tx: Transaction, order_id: str, order: Document, state: str) -> None:
    revenue = await _revenue_by_item(tx, order) if state in ("completed", "partial") else {}
    for item in order.get("productOrderItem") or ():
        item_id = str(item.get("id"))
        offering_id = str((item.get("productOffering") or {}).get("id") or "")
        cents = revenue.get(item_id, 0)
        await tx.execute(
            "INSERT INTO analytics_order_item (order_id, item_id, offering_id, state, revenue_cents)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id, item_id) DO UPDATE SET"
            " offering_id = excluded.offering_id, state = excluded.state,"
            " revenue_cents = excluded.revenue_cents",
            (order_id, item_id, offering_id, str(item.get("state") or state), cents),
        )


async def _revenue_by_item(tx: Transaction, order: Document) -> dict[str, int]:
    try:
        lines = charge_lines(order, await read_price_book(tx))
    except UnpricedItem as error:  # analytics reports what it can; billing dead-letters the order
        log.warning("order %s has no revenue in analytics: %s", order.get("id"), error)
        return {}
    cents: dict[str, int] = {}
    for line in lines:
        top_item = line.key.item_id.split("/", 1)[0]  # bundle components count for the bundle's item
        cents[top_item] = cents.get(top_item, 0) + int(line.amount * 100)
    return cents


class OrderAnalytics:
    """The dashboard's query side."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def summary(self) -> OrderAnalyticsSummary:
        states = await self.database.fetchall("SELECT state, COUNT(*) FROM analytics_order GROUP BY state")
        offerings = await self.database.fetchall(
            "SELECT offering_id, state, COUNT(*), SUM(revenue_cents) FROM analytics_order_item"
            " GROUP BY offering_id, state ORDER BY offering_id, state"
        )
        durations = await self.database.fetchall(
            "SELECT completed_at - acknowledged_at FROM analytics_order"
            " WHERE completed_at IS NOT NULL AND acknowledged_at IS NOT NULL"
        )
        by_offering = [
            OfferingStateCount(str(offering), str(state), int(count), _amount(cents))
            for offering, state, count, cents in offerings
        ]
        return OrderAnalyticsSummary(
            orders_by_state={str(state): int(count) for state, count in states},
            by_offering=by_offering,
            duration=durations_of([max(0.0, float(row[0])) for row in durations]),
            revenue=sum((row.revenue for row in by_offering), Decimal("0.00")),
        )


def durations_of(seconds: Sequence[float]) -> Durations:
    ordered = sorted(seconds)
    return Durations(len(ordered), percentile(ordered, 50), percentile(ordered, 95))


def percentile(ordered: Sequence[float], rank: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
    return ordered[index]


def _amount(cents: Any) -> Decimal:
    return (Decimal(int(cents or 0)) / 100).quantize(Decimal("0.01"))


def _time(text: Any) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
