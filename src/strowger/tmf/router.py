"""The HTTP face of a :class:`TmfApi`: one FastAPI router with CRUD, ``/hub`` and ``/openapi.json``.

Bodies are read and parsed here, not by FastAPI, so the TMF630 rules hold for
every input: a body over ``max_body_bytes`` is 413, a content type the route
does not take is 415, malformed JSON is 400 — all with the TMF Error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from strowger.security.limits import parsed_json
from strowger.store.db import Database
from strowger.tmf.errors import (
    BadRequest,
    JsonResponse,
    PayloadTooLarge,
    TmfRoute,
    UnsupportedMediaType,
)
from strowger.tmf.hubs import CallbackGuard, HubStore, subscription_from_body, subscription_not_found
from strowger.tmf.openapi import errors, hub_docs, listener_docs, openapi_document, operation_docs
from strowger.tmf.patch import JSON, PATCH_MEDIA_TYPES
from strowger.tmf.query import ResourceQuery, parse_fields, parse_query, select_fields
from strowger.tmf.resources import EventSink, Operation, ResourceService, TmfApi


def tmf_router(api: TmfApi, database: Database, sink: EventSink, guard: CallbackGuard) -> APIRouter:
    """A router serving ``api`` under its base path; include it in any FastAPI application."""
    router = APIRouter(prefix=api.base_path, route_class=TmfRoute, default_response_class=JsonResponse)
    for resource in api.resources:
        _add_resource_routes(router, ResourceService(api, resource, database, sink))
    add_hub_routes(router, api.base_path, HubStore(database, api.name), guard, api.max_body_bytes)
    _add_openapi_route(router, api)
    return router


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (declared or streamed); 413 otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int, media_types: tuple[str, ...] = (JSON,)) -> tuple[Any, str]:
    """The parsed body and its media type; 413, 415 or 400 (naming the problem) otherwise."""
    media_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower() or JSON
    if media_type not in media_types:
        raise UnsupportedMediaType(f"expected {' or '.join(media_types)}, got {media_type!r}")
    body = await read_limited(request, limit)
    parsed = parsed_json(request.scope, body)  # the input-limit middleware's parse of these bytes
    if parsed is not None:
        return parsed[0], media_type
    try:
        return orjson.loads(body), media_type
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalidBody") from None


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", code="invalidBody")
    return body


def _fields(request: Request) -> ResourceQuery:
    text = request.query_params.get("fields")
    return ResourceQuery(fields=parse_fields(text) if text is not None else None)


def _add_resource_routes(router: APIRouter, service: ResourceService) -> None:
    resource = service.resource
    path, item = f"/{resource.name}", f"/{resource.name}/{{id}}"
    tag = resource.type_name
    limit = service.api.max_body_bytes
    docs = operation_docs(resource)
    served = resource.operations

    if Operation.LIST in served:

        @router.get(
            path, tags=[tag], summary=f"List or find {resource.type_name} objects", openapi_extra=docs["list"]
        )
        async def list_resources(request: Request) -> Response:
            page = await service.list(parse_query(request.query_params.multi_items()))
            headers = {"X-Total-Count": str(page.total), "X-Result-Count": str(len(page.items))}
            return JsonResponse(page.items, headers=headers)

    if Operation.CREATE in served:

        @router.post(
            path,
            tags=[tag],
            summary=f"Create a {resource.type_name}",
            openapi_extra=docs["create"],
            status_code=201,
        )
        async def create_resource(request: Request) -> Response:
            body, _ = await read_json(request, limit)
            document = await service.create(_object(body))
            return JsonResponse(document, status_code=201, headers={"Location": str(document["href"])})

    if Operation.RETRIEVE in served:

        @router.get(
            item, tags=[tag], summary=f"Retrieve a {resource.type_name} by id", openapi_extra=docs["get"]
        )
        async def get_resource(id: str, request: Request) -> Response:
            document = await service.get(id)
            return JsonResponse(select_fields(document, _fields(request).fields))

    if Operation.PATCH in served:

        @router.patch(item, tags=[tag], summary=f"Update a {resource.type_name}", openapi_extra=docs["patch"])
        async def patch_resource(id: str, request: Request) -> Response:
            body, media_type = await read_json(request, limit, PATCH_MEDIA_TYPES)
            return JsonResponse(await service.patch(id, body, media_type))

    if Operation.DELETE in served:

        @router.delete(item, tags=[tag], summary=f"Delete a {resource.type_name}", status_code=204)
        async def delete_resource(id: str) -> Response:
            await service.delete(id)
            return Response(status_code=204)


def add_hub_routes(
    router: APIRouter, base_path: str, store: HubStore, guard: CallbackGuard, max_body_bytes: int
) -> None:
    """The TMF hub under ``router``: ``POST /hub`` (201 and Location), ``GET`` and ``DELETE /hub/{id}``."""
    tag = "events subscription"

    @router.post("/hub", tags=[tag], summary="Register a listener", status_code=201, openapi_extra=hub_docs())
    async def register_listener(request: Request) -> Response:
        body, _ = await read_json(request, max_body_bytes)
        callback, query, secret = await subscription_from_body(body, guard)
        subscription = await store.add(callback, query, secret)
        headers = {"Location": f"{base_path}/hub/{subscription.id}"}
        return JsonResponse(subscription.to_tmf(), status_code=201, headers=headers)

    @router.get("/hub/{id}", tags=[tag], summary="Retrieve a listener", openapi_extra=listener_docs())
    async def get_listener(id: str) -> Response:
        subscription = await store.get(id)
        if subscription is None:
            raise subscription_not_found(id)
        return JsonResponse(subscription.to_tmf())

    @router.delete(
        "/hub/{id}",
        tags=[tag],
        summary="Unregister a listener",
        status_code=204,
        openapi_extra={"responses": errors(404)},
    )
    async def unregister_listener(id: str) -> Response:
        if not await store.remove(id):
            raise subscription_not_found(id)
        return Response(status_code=204)


def _add_openapi_route(router: APIRouter, api: TmfApi) -> None:
    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return JsonResponse(openapi_document(api.title, api.version, router.routes, api.schemas))
