"""OpenAPI descriptions of the TMF routes, one set for every API.

The routes read their bodies by hand (one parse, TMF error answers, no 422), so FastAPI
cannot derive request bodies, query parameters or responses from signatures: each operation
declares them here, against the API's own schemas (the spec's definitions served as
``components.schemas``, plus the TMF ``Error``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from strowger.tmf.errors import error_body
from strowger.tmf.patch import JSON, JSON_PATCH, MERGE_PATCH
from strowger.tmf.query import MAX_LIMIT, MAX_PAGE_NUMBER
from strowger.tmf.resources import ResourceType

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "reason"],
    "properties": {name: {"type": "string"} for name in ("code", "reason", "message", "status", "@type")},
    "example": error_body(404, "notFound", "Resource not found", "no productOffering with id 'x'"),
}
FIELDS = {
    "name": "fields",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Comma-separated properties",
}
PAGE = [
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_NUMBER},
    },
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}},
]
SORT = {"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "e.g. name,-lastUpdate"}
AS_OF = {
    "name": "asOf",
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
    "description": "The resource as it was at this RFC 3339 date-time (replayed from its events)",
}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def errors(*statuses: int) -> dict[str, Any]:
    """The TMF error body for each of ``statuses``."""
    return {
        str(status): {"description": "Error", "content": {JSON: {"schema": ref("Error")}}}
        for status in statuses
    }


def _one(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def create_docs(schema: str) -> dict[str, Any]:
    """POST: a ``<schema>_Create`` body, 201 with the resource."""
    return {
        "requestBody": {"required": True, "content": {JSON: {"schema": ref(f"{schema}_Create")}}},
        "responses": {"201": _one(schema, "Created")} | errors(400, 413, 415),
    }


def list_docs(schema: str) -> dict[str, Any]:
    """GET of the collection: TMF630 selection, paging and sorting (filters are any attribute)."""
    many = {JSON: {"schema": {"type": "array", "items": ref(schema)}}}
    return {
        "parameters": [FIELDS, *PAGE, SORT],
        "responses": {"200": {"description": "Success", "content": many}} | errors(400),
    }


def get_docs(schema: str, *, as_of: bool = False) -> dict[str, Any]:
    """GET of one resource, optionally ``asOf`` a time."""
    return {
        "parameters": [FIELDS, AS_OF] if as_of else [FIELDS],
        "responses": {"200": _one(schema, "Success")} | errors(400, 404),
    }


def patch_docs(schema: str) -> dict[str, Any]:
    """PATCH: a ``<schema>_Update`` as merge patch (or plain JSON), or a JSON Patch array."""
    update = {"schema": ref(f"{schema}_Update")}
    content: dict[str, Any] = {MERGE_PATCH: update, JSON: update}
    content[JSON_PATCH] = {"schema": {"type": "array", "items": {"type": "object"}}}
    return {
        "requestBody": {"required": True, "content": content},
        "responses": {"200": _one(schema, "Updated")} | errors(400, 404, 409, 413, 415),
    }


def operation_docs(resource: ResourceType) -> dict[str, dict[str, Any]]:
    """The generic resource routes' descriptions, by operation."""
    schema = resource.schema_name or resource.type_name
    return {
        "list": list_docs(schema),
        "create": create_docs(schema),
        "get": get_docs(schema),
        "patch": patch_docs(schema),
    }


def listener_docs() -> dict[str, Any]:
    """GET of one listener: the EventSubscription, or 404."""
    return {"responses": {"200": _one("EventSubscription", "Listener")} | errors(404)}


def hub_docs() -> dict[str, Any]:
    """POST /hub: an EventSubscriptionInput, 201 with the EventSubscription."""
    return {
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("EventSubscriptionInput")}}},
        "responses": {"201": _one("EventSubscription", "Subscribed")} | errors(400),
    }


def openapi_document(
    title: str, version: str, routes: Sequence[BaseRoute], schemas: Mapping[str, Any]
) -> dict[str, Any]:
    """The API's document: its documented routes, its schemas and the TMF ``Error``."""
    documented = [route for route in routes if getattr(route, "include_in_schema", False)]
    document = get_openapi(title=title, version=version, routes=documented)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(schemas)
    components.setdefault("Error", ERROR_SCHEMA)
    return document
