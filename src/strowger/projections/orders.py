"""Read models of product orders: the order list, and the products each customer holds.

Both fold the ProductOrder aggregate's own events (``components/ordering/aggregate.py``)
with the aggregate's own ``apply``: the order document in a view is, by
construction, the document the write side holds after the same events. Each
view keeps what it needs in its own tables (no view reads another), so each can
be rebuilt on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from strowger.components.ordering.aggregate import ProductOrder
from strowger.projections.engine import Projection, Tables, ViewTable
from strowger.store.aggregate import DomainEvent
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import StoredEvent
from strowger.tmf.query import ResourceQuery, apply_query

STREAM_PREFIX = f"{ProductOrder.stream_type}-"
_EVENT_CLASSES: Mapping[str, type[DomainEvent]] = {cls.event_type: cls for cls in ProductOrder.event_types}
# Order states after which the items' outcome is known: completed items become products.
_DELIVERED = frozenset({"completed", "partial"})


def order_id_of(event: StoredEvent) -> str | None:
    """The order id of a ProductOrder stream event, None for other streams."""
    if event.stream_id.startswith(STREAM_PREFIX):
        return event.stream_id[len(STREAM_PREFIX) :]
    return None


def fold(order_id: str, state: Mapping[str, Any] | None, event: StoredEvent) -> ProductOrder:
    """The aggregate after ``event``, from its state before (None: the stream's first event)."""
    order = ProductOrder(order_id)
    if state is not None:
        order.restore_state(state)
    order.apply(_EVENT_CLASSES[event.event_type].from_payload(event.payload))
    return order


def customer_of(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(id, name) of the relatedParty whose role is customer."""
    for party in document.get("relatedParty") or ():
        if isinstance(party, Mapping) and str(party.get("role", "")).lower() == "customer":
            return party.get("id"), party.get("name")
    return None, None


def offering_names(document: Mapping[str, Any]) -> list[str]:
    names = []
    for item in document.get("productOrderItem") or ():
        offering = item.get("productOffering") or {}
        name = offering.get("name") or offering.get("id")
        if name:
            names.append(str(name))
    return names


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _load(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


# --- the order list ------------------------------------------------------------------------------


class OrderListProjection(Projection):
    """One row per product order: what dashboards and front ends list and filter on."""

    name = "order_list"
    version = 1
    tables = (
        ViewTable(
            "order_list",
            sqlite="""order_id TEXT PRIMARY KEY, state TEXT NOT NULL, customer_id TEXT, customer_name TEXT,
                offerings TEXT NOT NULL, order_date TEXT, completion_date TEXT, last_event_at TEXT NOT NULL,
                version INTEGER NOT NULL, document TEXT NOT NULL, aggregate TEXT NOT NULL""",
            postgresql="""order_id TEXT PRIMARY KEY, state TEXT NOT NULL, customer_id TEXT,
                customer_name TEXT, offerings TEXT NOT NULL, order_date TEXT, completion_date TEXT,
                last_event_at TEXT NOT NULL, version BIGINT NOT NULL, document TEXT NOT NULL,
                aggregate TEXT NOT NULL""",
            indexes=(("state", "state, order_date"), ("customer", "customer_id, order_date")),
        ),
    )
    event_types = frozenset(_EVENT_CLASSES)

    def wants(self, event: StoredEvent) -> bool:
        return super().wants(event) and order_id_of(event) is not None

    async def apply(self, tx: Transaction, event: StoredEvent, tables: Tables) -> None:
        order_id = order_id_of(event)
        assert order_id is not None
        row = await tx.fetchone(
            tables.sql("SELECT aggregate FROM {order_list} WHERE order_id = ?"), (order_id,)
        )
        order = fold(order_id, None if row is None else _load(row[0]), event)
        if order.deleted:
            await tx.execute(tables.sql("DELETE FROM {order_list} WHERE order_id = ?"), (order_id,))
            return
        document = order.to_tmf()
        customer_id, customer_name = customer_of(document)
        await tx.execute(
            tables.sql(
                "INSERT INTO {order_list} (order_id, state, customer_id, customer_name, offerings, "
                "order_date, completion_date, last_event_at, version, document, aggregate) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET "
                "state = excluded.state, customer_id = excluded.customer_id, "
                "customer_name = excluded.customer_name, offerings = excluded.offerings, "
                "order_date = excluded.order_date, completion_date = excluded.completion_date, "
                "last_event_at = excluded.last_event_at, version = excluded.version, "
                "document = excluded.document, aggregate = excluded.aggregate"
            ),
            (
                order_id,
                document.get("state", ""),
                customer_id,
                customer_name,
                _json(offering_names(document)),
                document.get("orderDate"),
                document.get("completionDate"),
                event.recorded_at.isoformat(timespec="microseconds"),
                event.version,
                _json(document),
                _json(order.snapshot_state()),
            ),
        )


@dataclass(frozen=True)
class OrderSummary:
    order_id: str
    state: str
    customer_id: str | None
    customer_name: str | None
    offerings: tuple[str, ...]
    order_date: str | None
    completion_date: str | None
    last_event_at: str
    version: int


_SUMMARY = (
    "SELECT order_id, state, customer_id, customer_name, offerings, order_date, completion_date, "
    "last_event_at, version FROM order_list "
)
_SORTABLE = {"orderDate": "order_date", "completionDate": "completion_date", "lastEventAt": "last_event_at"}


class OrderListView:
    """Queries over the ``order_list`` view (the live generation, whatever rebuild is running)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def summaries(
        self,
        *,
        state: Sequence[str] = (),
        customer_id: str | None = None,
        offset: int = 0,
        limit: int = 100,
        sort: str = "-orderDate",
    ) -> list[OrderSummary]:
        """A page of orders filtered by state(s) and customer, sorted on orderDate, completionDate
        or lastEventAt (``-`` prefix: descending)."""
        column = _SORTABLE.get(sort.lstrip("-"))
        if column is None:
            raise ValueError(
                f"cannot sort on {sort!r}; one of {', '.join(_SORTABLE)} (prefix - for descending)"
            )
        direction = "DESC" if sort.startswith("-") else "ASC"
        where, params = _where(state, customer_id)
        rows = await self.database.fetchall(
            _SUMMARY + where + f" ORDER BY {column} {direction}, order_id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [
            OrderSummary(
                str(r[0]), str(r[1]), r[2], r[3], tuple(_load(r[4])), r[5], r[6], str(r[7]), int(r[8])
            )
            for r in rows
        ]

    async def count(self, *, state: Sequence[str] = (), customer_id: str | None = None) -> int:
        where, params = _where(state, customer_id)
        row = await self.database.fetchone("SELECT count(*) FROM order_list " + where, params)  # noqa: S608
        return int(row[0]) if row else 0

    async def get(self, order_id: str) -> dict[str, Any] | None:
        """The productOrder resource as the view holds it."""
        row = await self.database.fetchone("SELECT document FROM order_list WHERE order_id = ?", (order_id,))
        return None if row is None else dict(_load(row[0]))

    async def query(self, query: ResourceQuery) -> tuple[list[dict[str, Any]], int]:
        """A TMF630 list request (filters, sort, fields, paging) over the productOrder documents.

        An equality filter on ``state`` is pushed down to SQL; the rest is
        matched in memory with :mod:`strowger.tmf.query`. Returns (page, total).
        """
        states: tuple[str, ...] = ()
        for condition in query.conditions:
            if condition.path == ("state",) and condition.op.value == "eq":
                states = condition.values
        where, params = _where(states, None)
        rows = await self.database.fetchall("SELECT document FROM order_list " + where, params)  # noqa: S608
        page = apply_query((dict(_load(row[0])) for row in rows), query)
        return page.items, page.total


def _where(states: Sequence[str], customer_id: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if states:
        clauses.append(f"state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    if customer_id is not None:
        clauses.append("customer_id = ?")
        params.append(customer_id)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)


# --- customer product inventory ------------------------------------------------------------------


class CustomerProductsProjection(Projection):
    """Products per customer with their status, from completed product order items.

    An item completed in an order that ends ``completed`` or ``partial`` becomes
    (``add``), updates (``modify``) or terminates (``delete``) a product; the
    product id is the item's ``product.id`` if the order names one, else
    ``<order id>-<item id>``. TMF637 status values: active, terminated.
    """

    name = "customer_products"
    version = 1
    tables = (
        ViewTable(
            "customer_product",
            sqlite="""product_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
                offering_id TEXT, offering_name TEXT, order_id TEXT NOT NULL, order_item_id TEXT NOT NULL,
                start_date TEXT, termination_date TEXT, updated_at TEXT NOT NULL""",
            postgresql="""product_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
                offering_id TEXT, offering_name TEXT, order_id TEXT NOT NULL, order_item_id TEXT NOT NULL,
                start_date TEXT, termination_date TEXT, updated_at TEXT NOT NULL""",
            indexes=(("customer", "customer_id, status"),),
        ),
        # Orders still open: what an order says is needed once it completes (this view's own memory).
        ViewTable(
            "customer_product_order",
            sqlite="order_id TEXT PRIMARY KEY, aggregate TEXT NOT NULL",
            postgresql="order_id TEXT PRIMARY KEY, aggregate TEXT NOT NULL",
        ),
    )
    event_types = frozenset(_EVENT_CLASSES)

    def wants(self, event: StoredEvent) -> bool:
        return super().wants(event) and order_id_of(event) is not None

    async def apply(self, tx: Transaction, event: StoredEvent, tables: Tables) -> None:
        order_id = order_id_of(event)
        assert order_id is not None
        row = await tx.fetchone(
            tables.sql("SELECT aggregate FROM {customer_product_order} WHERE order_id = ?"), (order_id,)
        )
        before = None if row is None else _load(row[0])
        order = fold(order_id, before, event)
        if is_delivery(None if before is None else before["document"], order.document):
            await self._deliver(tx, tables, order_id, order.to_tmf(), event)
        if order.deleted or order.is_final:  # nothing further can change its products
            await tx.execute(
                tables.sql("DELETE FROM {customer_product_order} WHERE order_id = ?"), (order_id,)
            )
            return
        await tx.execute(
            tables.sql(
                "INSERT INTO {customer_product_order} (order_id, aggregate) VALUES (?, ?) "
                "ON CONFLICT (order_id) DO UPDATE SET aggregate = excluded.aggregate"
            ),
            (order_id, _json(order.snapshot_state())),
        )

    async def _deliver(
        self, tx: Transaction, tables: Tables, order_id: str, document: Mapping[str, Any], event: StoredEvent
    ) -> None:
        for delivered in delivered_products(order_id, document, event.recorded_at.isoformat()):
            await tx.execute(
                tables.sql(
                    "INSERT INTO {customer_product} (product_id, customer_id, status, offering_id, "
                    "offering_name, order_id, order_item_id, start_date, termination_date, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (product_id) DO UPDATE SET "
                    "customer_id = excluded.customer_id, status = excluded.status, "
                    "offering_id = COALESCE(excluded.offering_id, {customer_product}.offering_id), "
                    "offering_name = COALESCE(excluded.offering_name, {customer_product}.offering_name), "
                    "order_id = excluded.order_id, order_item_id = excluded.order_item_id, "
                    "start_date = COALESCE({customer_product}.start_date, excluded.start_date), "
                    "termination_date = excluded.termination_date, updated_at = excluded.updated_at"
                ),
                (
                    delivered.product_id,
                    delivered.customer_id,
                    delivered.status,
                    delivered.offering.get("id"),
                    delivered.offering.get("name"),
                    order_id,
                    delivered.order_item_id,
                    None if delivered.terminated else delivered.at,
                    delivered.at if delivered.terminated else None,
                    delivered.at,
                ),
            )


@dataclass(frozen=True)
class DeliveredProduct:
    """What one completed item of a delivered order does to a customer's product."""

    product_id: str
    customer_id: str
    action: str  # add, modify or delete (TMF622 ItemActionType)
    at: str  # when it took effect: the order's completionDate
    order_item_id: str
    offering: Mapping[str, Any]
    item: Mapping[str, Any]

    @property
    def terminated(self) -> bool:
        return self.action == "delete"

    @property
    def status(self) -> str:
        return "terminated" if self.terminated else "active"


def delivered_products(
    order_id: str, document: Mapping[str, Any], fallback_at: str
) -> list[DeliveredProduct]:
    """The product changes an order that just became completed/partial brings, item by item.

    Pure: the live ``customer_products`` view folds orders through it.
    """
    customer_id, _ = customer_of(document)
    if customer_id is None:
        return []
    at = str(document.get("completionDate") or fallback_at)
    changes = []
    for item in document.get("productOrderItem") or ():
        if item.get("state") != "completed":
            continue
        product = item.get("product") or {}
        changes.append(
            DeliveredProduct(
                product_id=str(product.get("id") or f"{order_id}-{item['id']}"),
                customer_id=str(customer_id),
                action=str(item.get("action")),
                at=at,
                order_item_id=str(item["id"]),
                offering=item.get("productOffering") or {},
                item=item,
            )
        )
    return changes


def is_delivery(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether an order document moved INTO a delivered state (completed, partial) with this event."""
    was_delivered = before is not None and before.get("state") in _DELIVERED
    return after.get("state") in _DELIVERED and not was_delivered


@dataclass(frozen=True)
class CustomerProduct:
    product_id: str
    customer_id: str
    status: str
    offering_id: str | None
    offering_name: str | None
    order_id: str
    order_item_id: str
    start_date: str | None
    termination_date: str | None


class CustomerProductsView:
    """Queries over the ``customer_product`` view."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def products(
        self, customer_id: str, *, status: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[CustomerProduct]:
        """The products of ``customer_id`` (optionally only those in ``status``), by product id."""
        sql = (
            "SELECT product_id, customer_id, status, offering_id, offering_name, order_id, order_item_id, "
            "start_date, termination_date FROM customer_product WHERE customer_id = ?"
        )
        params: list[Any] = [customer_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = await self.database.fetchall(
            sql + " ORDER BY product_id LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        return [CustomerProduct(*(str(v) if i < 3 else v for i, v in enumerate(row))) for row in rows]
