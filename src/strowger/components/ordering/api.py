"""TMF622 Product Ordering Management v4 over HTTP: ``productOrder``, ``cancelProductOrder``, ``/hub``.

The TMF630 conventions come from :mod:`strowger.tmf` (errors, query, fields,
pagination, patch, hub); the resources are event-sourced
(:class:`~strowger.components.ordering.service.OrderingService`), so this
module only translates HTTP to commands and queries and domain refusals to
TMF errors:

* message rule broken (missing ``productOrderItem``, item without ``id``...) → 400 naming the field;
* server-managed attribute in a body → 400 ``readOnlyField``;
* a change the order's state does not allow → 409 ``invalidStateTransition``;
* ``GET /productOrder/{id}?asOf=<RFC 3339>`` → the order as it was then (replayed), 404 if it did not
  exist yet, 400 if ``asOf`` is not an RFC 3339 date-time with an offset.

``GET /openapi.json`` serves the OpenAPI 3 document of these routes, with the TMF622 v4
schemas (``strowger/tmf/specs/v4``) as ``components.schemas``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request, Response

from strowger.components.ordering.aggregate import InvalidOrder, ReadOnlyAttribute
from strowger.components.ordering.service import OrderingService
from strowger.components.ordering.states import UnknownState
from strowger.errors import NotFound
from strowger.store.db import Database
from strowger.tmf.errors import BadRequest, JsonResponse, TmfRoute
from strowger.tmf.hubs import CallbackGuard, HubStore
from strowger.tmf.openapi import (
    ERROR_SCHEMA,
    create_docs,
    errors,
    get_docs,
    list_docs,
    openapi_document,
    patch_docs,
)
from strowger.tmf.patch import PATCH_MEDIA_TYPES, apply_patch
from strowger.tmf.query import Page, parse_fields, parse_query, select_fields
from strowger.tmf.router import add_hub_routes, read_json
from strowger.tmf.tasks import cancelled_order, unknown_order

API_NAME = "productOrderingManagement"
API_TITLE = "TMF622 Product Ordering Management"
API_VERSION = "4.0.0"
SPEC_FILE = "specs/v4/TMF622-ProductOrdering-v4.0.0.swagger.json"
MAX_BODY_BYTES = 1 << 20


@contextmanager
def api_errors() -> Iterator[None]:
    """Domain refusals as TMF errors (NotFound and InvalidStateTransition are mapped by TmfRoute)."""
    try:
        yield
    except ReadOnlyAttribute as error:
        raise BadRequest(str(error), field=error.field, code="readOnlyField") from None
    except InvalidOrder as error:
        code = "missingBodyField" if error.missing else "invalidBodyField"
        raise BadRequest(str(error), field=error.field, code=code) from None
    except UnknownState as error:
        raise BadRequest(str(error), field="state", code="invalidBodyField") from None


def parse_as_of(text: str | None) -> datetime | None:
    """``asOf`` as an aware datetime; 400 unless it is an RFC 3339 date-time with an offset."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in text.upper():
        raise BadRequest(
            f"asOf must be an RFC 3339 date-time with an offset (e.g. 2025-01-31T12:00:00Z), got {text!r}",
            field="asOf",
            code="invalidParameter",
        )
    return moment


def ordering_router(
    service: OrderingService, database: Database, guard: CallbackGuard | None = None
) -> APIRouter:
    """The TMF622 routes under ``service.base_path``; ``guard`` checks hub callbacks (default: public)."""
    router = APIRouter(prefix=service.base_path, route_class=TmfRoute, default_response_class=JsonResponse)
    _order_routes(router, service)
    _cancel_routes(router, service)
    add_hub_routes(
        router, service.base_path, HubStore(database, API_NAME), guard or CallbackGuard(), MAX_BODY_BYTES
    )
    _openapi_route(router)
    return router


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", code="invalidBody")
    return dict(body)


def _page(page: Page) -> Response:
    headers = {"X-Total-Count": str(page.total), "X-Result-Count": str(len(page.items))}
    return JsonResponse(page.items, headers=headers)


def _query(request: Request) -> list[tuple[str, str]]:
    return [(name, value) for name, value in request.query_params.multi_items() if name != "asOf"]


def _order_routes(router: APIRouter, service: OrderingService) -> None:
    tag = "productOrder"

    @router.post(
        "/productOrder",
        tags=[tag],
        summary="Create a ProductOrder",
        status_code=201,
        openapi_extra=create_docs("ProductOrder"),
    )
    async def create_order(request: Request) -> Response:
        body, _ = await read_json(request, MAX_BODY_BYTES)
        with api_errors():
            order = await service.place(_object(body))
        return JsonResponse(order, status_code=201, headers={"Location": str(order["href"])})

    @router.get(
        "/productOrder",
        tags=[tag],
        summary="List or find ProductOrder objects",
        openapi_extra=list_docs("ProductOrder"),
    )
    async def list_orders(request: Request) -> Response:
        return _page(await service.list(parse_query(_query(request))))

    @router.get(
        "/productOrder/{id}",
        tags=[tag],
        summary="Retrieve a ProductOrder, optionally asOf a time",
        openapi_extra=get_docs("ProductOrder", as_of=True),
    )
    async def get_order(id: str, request: Request) -> Response:
        as_of = parse_as_of(request.query_params.get("asOf"))
        fields = request.query_params.get("fields")
        order = await service.get(id, as_of=as_of)
        return JsonResponse(select_fields(order, parse_fields(fields) if fields is not None else None))

    @router.patch(
        "/productOrder/{id}",
        tags=[tag],
        summary="Update a ProductOrder",
        openapi_extra=patch_docs("ProductOrder"),
    )
    async def patch_order(id: str, request: Request) -> Response:
        body, media_type = await read_json(request, MAX_BODY_BYTES, PATCH_MEDIA_TYPES)
        with api_errors():
            order = await service.amend(id, lambda current: apply_patch(current, body, media_type))
        return JsonResponse(order)

    @router.delete(
        "/productOrder/{id}",
        tags=[tag],
        summary="Delete a finished ProductOrder",
        status_code=204,
        openapi_extra={"responses": errors(404, 409)},
    )
    async def delete_order(id: str) -> Response:
        await service.delete(id)
        return Response(status_code=204)


def _cancel_routes(router: APIRouter, service: OrderingService) -> None:
    tag = "cancelProductOrder"

    @router.post(
        "/cancelProductOrder",
        tags=[tag],
        summary="Create a CancelProductOrder",
        status_code=201,
        openapi_extra=create_docs("CancelProductOrder"),
    )
    async def create_cancel(request: Request) -> Response:
        body = _object((await read_json(request, MAX_BODY_BYTES))[0])
        reference = cancelled_order(body, "productOrder")
        try:
            task = await service.request_cancellation(body)
        except NotFound:
            raise unknown_order("productOrder", reference) from None
        return JsonResponse(task, status_code=201, headers={"Location": str(task["href"])})

    @router.get(
        "/cancelProductOrder",
        tags=[tag],
        summary="List or find CancelProductOrder objects",
        openapi_extra=list_docs("CancelProductOrder"),
    )
    async def list_cancels(request: Request) -> Response:
        return _page(await service.list_tasks(parse_query(_query(request))))

    @router.get(
        "/cancelProductOrder/{id}",
        tags=[tag],
        summary="Retrieve a CancelProductOrder, optionally asOf a time",
        openapi_extra=get_docs("CancelProductOrder", as_of=True),
    )
    async def get_cancel(id: str, request: Request) -> Response:
        fields = request.query_params.get("fields")
        task = await service.get_task(id, as_of=parse_as_of(request.query_params.get("asOf")))
        return JsonResponse(select_fields(task, parse_fields(fields) if fields is not None else None))


# --- the OpenAPI document (bodies are parsed by hand, so they are declared here) --------------


@cache
def openapi_schemas() -> Mapping[str, Any]:
    """The TMF622 v4 definitions as OpenAPI 3 ``components.schemas`` (and the TMF error)."""
    text = files("strowger.tmf").joinpath(SPEC_FILE).read_text(encoding="utf-8")
    definitions = json.loads(text)["definitions"]
    schemas: dict[str, Any] = json.loads(
        json.dumps(definitions).replace("#/definitions/", "#/components/schemas/")
    )
    schemas["Error"] = ERROR_SCHEMA
    return schemas


def _openapi_route(router: APIRouter) -> None:
    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return JsonResponse(openapi_document(API_TITLE, API_VERSION, router.routes, openapi_schemas()))
