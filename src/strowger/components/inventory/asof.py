"""TMF637 product inventory as it was at a past moment, answered from the inventory's own history.

``GET /tmf-api/productInventory/v4/product?relatedParty.id=C&asOf=2026-03-15T00:00:00Z``
is ONE call. Every write of a product (the ``inventory-products`` consumer recording an
order's products, a TMF637 POST/PATCH/DELETE) appends the product's new version to
``tmf_resource_history`` in the transaction that writes it (``keep_history`` on the
TMF637 resource). ``asOf`` replays that history up to the moment: each product as its last
version recorded at or before it, none if it did not exist yet or was deleted by then.

The history belongs to the inventory component, in its own schema: the answer needs no
read of ordering's event store or views (docs/operations.md, "Database layout"). The moment
is the inventory's: when it recorded the change, a hop after the order completed.

So the answer has the live TMF637 shape, with the TMF630 filters, ``sort``, ``fields`` and
paging applied. Without ``asOf`` the routes serve the live inventory unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fastapi import APIRouter, Request, Response
from starlette.routing import BaseRoute, Route

from strowger.components.inventory.api import PRODUCT_INVENTORY_API
from strowger.tmf.errors import BadRequest, JsonResponse, TmfRoute
from strowger.tmf.openapi import operation_docs
from strowger.tmf.query import parse_fields, parse_query, select_fields
from strowger.tmf.resources import ResourceService

AS_OF = "asOf"


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
    "description": "Answer as the inventory was at this moment (replayed from its product history)",
}


def add_as_of_routes(router: APIRouter, products: ResourceService) -> APIRouter:
    """Replace ``router``'s GET product routes by ones that take ``asOf`` (live answers unchanged)."""
    base = PRODUCT_INVENTORY_API.base_path
    docs = operation_docs(products.resource)
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
            page = await products.list(query)
        else:
            page = await products.list_as_of(query, parse_as_of(moment_text))
        headers = {"X-Total-Count": str(page.total), "X-Result-Count": str(len(page.items))}
        return JsonResponse(page.items, headers=headers)

    @scratch.get(
        "/product/{id}", tags=["Product"], summary="Retrieve a Product by id", openapi_extra=get_docs
    )
    async def get_product(id: str, request: Request) -> Response:
        text = request.query_params.get("fields")
        fields = parse_fields(text) if text is not None else None
        moment_text = request.query_params.get(AS_OF)
        if moment_text is None:
            return JsonResponse(select_fields(await products.get(id), fields))
        document = await products.get_as_of(id, parse_as_of(moment_text))
        return JsonResponse(select_fields(document, fields))

    replaced = {(f"{base}/product", "GET"), (f"{base}/product/{{id}}", "GET")}
    kept: list[BaseRoute] = [route for route in router.routes if not _is_one_of(route, replaced)]
    router.routes[:] = [*scratch.routes, *kept]
    return router


def _is_one_of(route: BaseRoute, replaced: set[tuple[str, str]]) -> bool:
    return isinstance(route, Route) and any(
        route.path == path and method in (route.methods or ()) for path, method in replaced
    )


__all__ = ["AS_OF", "add_as_of_routes", "parse_as_of"]
