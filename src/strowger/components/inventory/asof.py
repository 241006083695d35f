"""TMF637 product inventory as it was at a past moment, answered by replaying the order events.

``GET /tmf-api/productInventory/v4/product?relatedParty.id=C&asOf=2026-03-15T00:00:00Z``
is ONE call: the customer's product orders are found in the ``order_list``
and ``customer_product`` views, their events recorded at or before ``asOf``
are read from the event store in global order (one query per 500 orders),
and folded in memory through the same steps the live side takes:

* the ProductOrder aggregate's own ``apply`` rebuilds each order's document;
* :func:`~strowger.projections.orders.delivered_products` (the ``customer_products``
  projection's fold) says which products an order delivers when it becomes
  completed or partial;
* each product document is written the way the fulfilment consumer writes the
  live inventory (``record_products``: the same entity, merged as a JSON Merge
  Patch, lifecycle moves checked, delete = ``terminated``).

So the answer has the live TMF637 shape, with the TMF630 filters, ``sort``,
``fields`` and paging applied. Without ``asOf`` the routes serve the live
inventory unchanged. The views only narrow down which streams to read; what
the answer says comes from the events alone (an order's customer never
changes after it is placed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.routing import BaseRoute, Route

from strowger.components.inventory.api import PRODUCT_INVENTORY_API, PRODUCT_STATUS
from strowger.components.ordering.aggregate import ProductOrder
from strowger.components.ordering.consumers import _product as product_entity
from strowger.errors import InvalidStateTransition
from strowger.projections.orders import (
    _EVENT_CLASSES,
    STREAM_PREFIX,
    DeliveredProduct,
    delivered_products,
    is_delivery,
    order_id_of,
)
from strowger.store.db import Database
from strowger.store.eventstore import SqlEventStore, StoredEvent, open_event_store
from strowger.tmf.errors import BadRequest, JsonResponse, ResourceNotFound, TmfRoute
from strowger.tmf.patch import MERGE_PATCH, apply_patch
from strowger.tmf.query import Op, ResourceQuery, apply_query, parse_fields, parse_query, select_fields
from strowger.tmf.resources import Document, ResourceService
from strowger.tmf.router import operation_docs

AS_OF = "asOf"
_CUSTOMER_PATH = ("relatedParty", "id")


def parse_as_of(text: str) -> datetime:
    """An RFC 3339 date-time with a zone; BadRequest naming ``asOf`` otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"asOf: {text!r} is not an RFC 3339 date-time (e.g. 2026-03-15T00:00:00Z)",
            field=AS_OF,
            code="invalidParameter",
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(
            f"asOf: {text!r} has no time zone (add Z or an offset)", field=AS_OF, code="invalidParameter"
        )
    return moment


class ProductInventoryAsOf:
    """Point-in-time TMF637 products, replayed from the ProductOrder events."""

    def __init__(self, database: Database, store: SqlEventStore | None = None) -> None:
        self.database = database
        self.store = store if store is not None else open_event_store(database)

    async def products(self, moment: datetime, customer_ids: Sequence[str] | None) -> list[Document]:
        """Every product of ``customer_ids`` (None: of every customer) as it was at ``moment``."""
        order_ids = await self._order_ids(customer_ids)
        events = await self.store.read_streams(
            [f"{STREAM_PREFIX}{order_id}" for order_id in order_ids], recorded_until=moment
        )
        wanted = None if customer_ids is None else frozenset(customer_ids)
        return list(replay(events, wanted).values())

    async def product(self, product_id: str, moment: datetime) -> Document | None:
        """Product ``product_id`` as it was at ``moment`` (None if it did not exist yet)."""
        customer_id = await self._customer_of_product(product_id)
        if customer_id is None:
            return None
        for document in await self.products(moment, [customer_id]):
            if document["id"] == product_id:
                return document
        return None

    async def _order_ids(self, customer_ids: Sequence[str] | None) -> list[str]:
        # order_list holds every live order of a customer; customer_product still names the
        # order behind a product whose order was deleted since.
        if customer_ids is None:
            sql = "SELECT order_id FROM order_list UNION SELECT order_id FROM customer_product"
            rows = await self.database.fetchall(sql)
            return [str(row[0]) for row in rows]
        ids: set[str] = set()
        for customer_id in customer_ids:
            rows = await self.database.fetchall(
                "SELECT order_id FROM order_list WHERE customer_id = ? "
                "UNION SELECT order_id FROM customer_product WHERE customer_id = ?",
                (customer_id, customer_id),
            )
            ids.update(str(row[0]) for row in rows)
        return sorted(ids)

    async def _customer_of_product(self, product_id: str) -> str | None:
        row = await self.database.fetchone(
            "SELECT customer_id FROM customer_product WHERE product_id = ?", (product_id,)
        )
        return None if row is None else str(row[0])


def replay(events: Iterable[StoredEvent], customers: frozenset[str] | None) -> dict[str, Document]:
    """Fold ProductOrder events (global order) into product documents by id, for ``customers``."""
    orders: dict[str, ProductOrder] = {}
    products: dict[str, Document] = {}
    for event in events:
        order_id = order_id_of(event)
        if order_id is None or event.event_type not in _EVENT_CLASSES:
            continue
        order = orders.setdefault(order_id, ProductOrder(order_id))
        before = dict(order.document) if order.document else None
        order.apply(_EVENT_CLASSES[event.event_type].from_payload(event.payload))
        if not is_delivery(before, order.document):
            continue
        document = order.to_tmf()
        for delivered in delivered_products(order_id, document, event.recorded_at.isoformat()):
            if customers is None or delivered.customer_id in customers:
                _record(products, delivered, document)
    return products


def _record(products: dict[str, Document], delivered: DeliveredProduct, order: Document) -> None:
    """What ``record_products`` does to the live inventory, on the in-memory documents."""
    before = products.get(delivered.product_id)
    if delivered.terminated:
        if before is not None:
            _merge(products, before, {"status": "terminated", "terminationDate": delivered.at})
        return
    if delivered.action not in ("add", "modify"):
        return
    entity = product_entity(
        delivered.product_id, dict(delivered.item.get("product") or {}), delivered.item, order, delivered.at
    )
    if before is not None:
        _merge(products, before, {key: value for key, value in entity.items() if key not in ("id", "href")})
        return
    document: dict[str, Any] = {
        "id": delivered.product_id,
        "href": f"{PRODUCT_INVENTORY_API.base_path}/product/{delivered.product_id}",
        **{key: value for key, value in entity.items() if key not in ("id", "href")},
    }
    document.setdefault("@type", "Product")
    products[delivered.product_id] = document


def _merge(products: dict[str, Document], before: Document, changes: Mapping[str, Any]) -> None:
    after = apply_patch(before, dict(changes), MERGE_PATCH)
    try:  # the live writer refuses an illegal move (the change is dead-lettered): so does the replay
        PRODUCT_STATUS.check_move(before.get("status"), after.get("status"))
    except InvalidStateTransition:
        return
    products[str(before["id"])] = after


# --- the HTTP face -----------------------------------------------------------------------------


def _customers(query: ResourceQuery) -> list[str] | None:
    """The customer ids an equality filter on ``relatedParty.id`` names (None: no such filter)."""
    found: list[str] | None = None
    for condition in query.conditions:
        if condition.path == _CUSTOMER_PATH and condition.op is Op.EQ:
            named = set(condition.values)
            found = sorted(named if found is None else named & set(found))
    return found


def _without_as_of(params: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    rest, as_of = [], None
    for name, value in params:
        if name == AS_OF:
            as_of = value
        else:
            rest.append((name, value))
    return rest, as_of


_AS_OF_PARAMETER = {
    "name": AS_OF,
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
    "description": "Answer as the inventory was at this moment (replayed from the product order events)",
}


def add_as_of_routes(router: APIRouter, database: Database, live: ResourceService) -> APIRouter:
    """Replace ``router``'s GET product routes by ones that take ``asOf`` (live answers unchanged)."""
    as_of = ProductInventoryAsOf(database)
    base = PRODUCT_INVENTORY_API.base_path
    docs = operation_docs(live.resource)
    list_docs = {**docs["list"], "parameters": [*docs["list"]["parameters"], _AS_OF_PARAMETER]}
    get_docs = {**docs["get"], "parameters": [*docs["get"]["parameters"], _AS_OF_PARAMETER]}
    scratch = APIRouter(prefix=base, route_class=TmfRoute, default_response_class=JsonResponse)

    @scratch.get(
        "/product", tags=["Product"], summary="List or find Product objects", openapi_extra=list_docs
    )
    async def list_products(request: Request) -> Response:
        params, moment_text = _without_as_of(request.query_params.multi_items())
        query = parse_query(params)
        if moment_text is None:
            page = await live.list(query)
            items, total = page.items, page.total
        else:
            moment = parse_as_of(moment_text)
            documents = await as_of.products(moment, _customers(query))
            items, total = _page(documents, query)
        headers = {"X-Total-Count": str(total), "X-Result-Count": str(len(items))}
        return JsonResponse(items, headers=headers)

    @scratch.get(
        "/product/{id}", tags=["Product"], summary="Retrieve a Product by id", openapi_extra=get_docs
    )
    async def get_product(id: str, request: Request) -> Response:
        text = request.query_params.get("fields")
        fields = parse_fields(text) if text is not None else None
        moment_text = request.query_params.get(AS_OF)
        if moment_text is None:
            return JsonResponse(select_fields(await live.get(id), fields))
        document = await as_of.product(id, parse_as_of(moment_text))
        if document is None:
            raise ResourceNotFound(f"no product with id {id!r} as of {moment_text}")
        return JsonResponse(select_fields(document, fields))

    replaced = {(f"{base}/product", "GET"), (f"{base}/product/{{id}}", "GET")}
    kept: list[BaseRoute] = [route for route in router.routes if not _is_one_of(route, replaced)]
    router.routes[:] = [*scratch.routes, *kept]
    return router


def _is_one_of(route: BaseRoute, replaced: set[tuple[str, str]]) -> bool:
    return isinstance(route, Route) and any(
        route.path == path and method in (route.methods or ()) for path, method in replaced
    )


def _page(documents: list[Document], query: ResourceQuery) -> tuple[list[dict[str, Any]], int]:
    # Creation order, as the live collection lists them, unless the query sorts.
    ordered = sorted(documents, key=lambda document: (str(document.get("startDate", "")), document["id"]))
    page = apply_query((dict(document) for document in ordered), query)
    return page.items, page.total


__all__ = ["AS_OF", "ProductInventoryAsOf", "add_as_of_routes", "parse_as_of", "replay"]
