"""What must hold after a chaos scenario, read from the cluster's own database.

The order-level invariants (every order terminal or quarantined, no leaked pool value,
charges - credits == prices of completed orders) come from the demo driver; this module
adds the exactly-once checks: each counts EFFECTS (charge rows, notifications, analytics
rows, dead letters), not deliveries, so a redelivered event that took effect twice shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from strowger.components.billing.pricing import charge_lines
from strowger.demo.drive import Invariant, OrderRecord, _price_book
from strowger.store.db import Database

ACKNOWLEDGED_TEMPLATE_EVENT = "ProductOrderCreateEvent"


@dataclass(frozen=True, slots=True)
class RunScope:
    """The orders of one scenario (several scenarios share a cluster)."""

    orders: Sequence[OrderRecord]

    @property
    def ids(self) -> list[str]:
        return [order.id for order in self.orders if order.id]


async def effect_checks(
    database: Database,
    scope: RunScope,
    parked_before: float,
    poison: Sequence[str],
    readers: tuple[frozenset[str], frozenset[str]],
) -> list[Invariant]:
    return [
        await charges_once(database, scope),
        await notifications_once(database, scope),
        await analytics_once(database, scope),
        await dead_letters(database, parked_before, poison, readers),
    ]


async def _counts(database: Database, sql: str, ids: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, count in await database.fetchall(sql.format(ids=marks), tuple(chunk)):
            counts[str(key)] += int(count)
    return counts


def expected_charge_lines(order: OrderRecord) -> int:
    if order.state != "completed":
        return 0
    document = {
        "id": order.id,
        "billingAccount": {"id": "BA"},
        "productOrderItem": [
            {"id": "1", "action": "add", "state": "completed", "productOffering": {"id": order.offering}}
        ],
    }
    return len(charge_lines(document, _price_book()))


async def charges_once(database: Database, scope: RunScope) -> Invariant:
    """One charge row per (item, price) of every completed order; none for the others."""
    rows = await _counts(
        database,
        "SELECT order_id, COUNT(*) FROM billing_charge WHERE entry = 'charge' AND order_id IN ({ids}) "
        "GROUP BY order_id",
        scope.ids,
    )
    expected = {order.id: expected_charge_lines(order) for order in scope.orders if order.id}
    wrong = [order_id for order_id, count in expected.items() if rows.get(order_id, 0) != count]
    detail = f"{sum(rows.values())} charge rows, {sum(expected.values())} expected"
    if wrong:
        detail += (
            f"; {len(wrong)} orders off, e.g. {wrong[0]}: {rows.get(wrong[0], 0)} vs {expected[wrong[0]]}"
        )
    return Invariant("each completed order charged exactly once per price", not wrong, detail)


async def notifications_once(database: Database, scope: RunScope) -> Invariant:
    """Every order notified of its acceptance exactly once; no (order, template, channel) twice."""
    duplicates = await _counts(
        database,
        "SELECT entity_key, COUNT(*) - 1 FROM notification WHERE entity_key IN ({ids}) "
        "GROUP BY entity_key, template, channel HAVING COUNT(*) > 1",
        scope.ids,
    )
    acknowledged = await _counts(
        database,
        "SELECT entity_key, COUNT(DISTINCT event_id) FROM notification WHERE entity_key IN ({ids}) "
        "GROUP BY entity_key",
        scope.ids,
    )
    missing = [order_id for order_id in scope.ids if acknowledged.get(order_id, 0) == 0]
    extra = sum(duplicates.values())
    detail = (
        f"{sum(acknowledged.values())} order events notified, {extra} duplicates, "
        f"{len(missing)} orders never notified"
    )
    return Invariant("each order event notified exactly once", extra == 0 and not missing, detail)


async def analytics_once(database: Database, scope: RunScope) -> Invariant:
    """The analytics read model has each order once, in the state the order is in."""
    states: dict[str, str] = {}
    for start in range(0, len(scope.ids), 500):
        chunk = scope.ids[start : start + 500]
        marks = ",".join("?" * len(chunk))  # placeholders only: the ids travel as parameters
        sql = "SELECT order_id, state FROM analytics_order WHERE order_id IN (" + marks + ")"  # noqa: S608
        states.update(
            {str(order_id): str(state) for order_id, state in await database.fetchall(sql, tuple(chunk))}
        )
    wrong = [order.id for order in scope.orders if order.id and states.get(order.id) != order.state]
    detail = f"{len(states)} of {len(scope.ids)} orders in analytics"
    if wrong:
        detail += f"; {len(wrong)} missing or stale, e.g. {wrong[0]}: {states.get(wrong[0])!r}"
    return Invariant("analytics saw each order exactly in its final state", not wrong, detail)


async def last_parked_id(database: Database) -> float:
    """When the last dead letter was parked: a scenario looks only past it.

    A time, not an id: in a split cluster every component has its own ``parked`` table and
    its own ids (the directory view unites them), while their clock is the same machine's."""
    row = await database.fetchone("SELECT COALESCE(MAX(created_at), 0) FROM parked")
    return float(row[0]) if row else 0.0


async def dead_letters(
    database: Database,
    parked_before: float,
    poison: Sequence[str],
    readers: tuple[frozenset[str], frozenset[str]],
) -> Invariant:
    """The dead-letter queue holds the injected poison once per group reading it, and nothing else.

    ``readers``: the groups that must dead-letter each poison message, and those that may.
    """
    required, allowed = readers
    rows = await database.fetchall(
        "SELECT consumer, event_id, status, error_type FROM parked WHERE created_at > ?", (parked_before,)
    )
    poisoned = Counter(
        (str(consumer), str(event_id))
        for consumer, event_id, status, error_type in rows
        if event_id in poison and status == "dead" and error_type == "MalformedMessage"
    )
    others = [row for row in rows if row[1] not in poison]
    groups = {group for group, _ in poisoned}
    each_once = max(poisoned.values(), default=1) == 1
    complete = all((group, event_id) in poisoned for group in required for event_id in poison)
    ok = complete and groups <= allowed and each_once and not others
    detail = (
        f"{sum(poisoned.values())} poison dead letters from {len(groups)} groups "
        f"({len(poison)} injected; {len(required)} groups must, {len(allowed)} may), {len(others)} others"
    )
    if others:
        detail += f", e.g. {others[0][0]}: {others[0][3]} ({others[0][2]})"
    return Invariant("dead letters are exactly the injected poison", ok, detail)
