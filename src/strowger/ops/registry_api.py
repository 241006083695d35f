"""The schema registry over HTTP, shaped like Confluent Schema Registry's REST API.

Existing registry clients and tools work against it unchanged for JSON schemas.
Every failure is answered as ``{"error_code": N, "message": "..."}`` with the
Confluent code (40401 subject not found, 409 incompatible, 42201 invalid
schema...), never as a bare 500: :class:`_RegistryRoute` maps the errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from strowger.events.asyncapi import asyncapi_document
from strowger.events.compatibility import Compatibility
from strowger.events.registry import (
    IncompatibleSchema,
    RegisteredSchema,
    RegistryError,
    SchemaRegistry,
    canonical_json,
    parse_schema,
)
from strowger.events.topics import ALL_TOPICS, Topic

log = logging.getLogger("strowger.schema_registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
PREFIX = "/schema-registry"


class SchemaRequest(BaseModel):
    """The body of POST /subjects/{subject}/versions (and the compatibility check)."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str | dict[str, Any] = Field(alias="schema", description="The JSON Schema, as JSON text")
    schema_type: str = Field("JSON", alias="schemaType", description="Only JSON is supported")
    references: list[dict[str, Any]] = Field(default_factory=list)


class ConfigRequest(BaseModel):
    compatibility: str = Field(description="BACKWARD, FORWARD, FULL, their _TRANSITIVE variants, NONE")


def _error(status: int, error_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error_code": error_code, "message": message, **extra}, status_code=status)


class _RegistryRoute(APIRoute):
    """Turns every failure into the registry's error body (routers cannot own exception handlers)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except IncompatibleSchema as exc:
                return _error(409, 409, str(exc), messages=[str(issue) for issue in exc.issues])
            except RegistryError as exc:
                return _error(exc.status, exc.error_code, str(exc))
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                    for error in exc.errors()
                )
                return _error(422, 42200, f"Unprocessable request: {problems}")
            except Exception:
                log.exception("schema registry request failed: %s %s", request.method, request.url.path)
                return _error(500, 50001, "Error in the backend data store")

        return handle


def registry_router(registry: SchemaRegistry, *, prefix: str = PREFIX) -> APIRouter:
    """The REST API of ``registry``, mounted under ``prefix``."""
    router = APIRouter(
        prefix=prefix,
        tags=["schema registry"],
        route_class=_RegistryRoute,
    )

    @router.get("/subjects")
    async def list_subjects() -> list[str]:
        return await registry.subjects()

    @router.get("/subjects/{subject}/versions")
    async def list_versions(subject: str) -> list[int]:
        return await registry.versions(subject)

    @router.get("/subjects/{subject}/versions/{version}")
    async def get_version(subject: str, version: str) -> dict[str, Any]:
        return _version_body(await registry.get(subject, version))

    @router.get("/subjects/{subject}/versions/{version}/schema")
    async def get_version_schema(subject: str, version: str) -> Mapping[str, Any]:
        return (await registry.get(subject, version)).schema

    @router.post("/subjects/{subject}/versions")
    async def register(subject: str, body: SchemaRequest) -> dict[str, int]:
        return {"id": await registry.register(subject, _schema_of(body))}

    @router.post("/subjects/{subject}")
    async def lookup(subject: str, body: SchemaRequest) -> dict[str, Any]:
        return _version_body(await registry.lookup(subject, _schema_of(body)))

    @router.delete("/subjects/{subject}")
    async def delete_subject(subject: str) -> list[int]:
        return await registry.delete_subject(subject)

    @router.post("/compatibility/subjects/{subject}/versions/{version}")
    async def check_version(subject: str, version: str, body: SchemaRequest) -> dict[str, Any]:
        result = await registry.check(subject, _schema_of(body), version)
        return {"is_compatible": result.is_compatible, "messages": result.messages}

    @router.post("/compatibility/subjects/{subject}/versions")
    async def check_all(subject: str, body: SchemaRequest) -> dict[str, Any]:
        result = await registry.check(subject, _schema_of(body))
        return {"is_compatible": result.is_compatible, "messages": result.messages}

    @router.get("/config")
    async def get_global_config() -> dict[str, str]:
        return _config_body(await registry.compatibility())

    @router.put("/config")
    async def put_global_config(body: ConfigRequest) -> dict[str, str]:
        return {"compatibility": (await registry.set_compatibility(body.compatibility)).value}

    @router.get("/config/{subject}")
    async def get_subject_config(
        subject: str, default_to_global: bool = Query(False, alias="defaultToGlobal")
    ) -> dict[str, str]:
        return _config_body(await registry.compatibility(subject, default_to_global=default_to_global))

    @router.put("/config/{subject}")
    async def put_subject_config(subject: str, body: ConfigRequest) -> dict[str, str]:
        return {"compatibility": (await registry.set_compatibility(body.compatibility, subject)).value}

    @router.delete("/config/{subject}")
    async def delete_subject_config(subject: str) -> dict[str, str]:
        return _config_body(await registry.delete_compatibility(subject))

    @router.get("/schemas/ids/{schema_id}")
    async def get_schema(schema_id: int) -> dict[str, Any]:
        return {"schema": canonical_json(await registry.schema_by_id(schema_id)), "schemaType": "JSON"}

    @router.get("/schemas/types")
    async def schema_types() -> list[str]:
        return ["JSON"]

    return router


def asyncapi_router(
    registry: SchemaRegistry, topics: Sequence[Topic] = ALL_TOPICS, *, path: str = "/asyncapi.json"
) -> APIRouter:
    """Serves the AsyncAPI document of ``topics`` with the latest schema of every subject."""
    router = APIRouter(tags=["schema registry"], route_class=_RegistryRoute)

    @router.get(path)
    async def asyncapi() -> dict[str, Any]:
        schemas = {}
        for subject in await registry.subjects():
            latest = await registry.get(subject)
            schemas[(subject, latest.version)] = latest.schema
        return asyncapi_document(topics, schemas)

    return router


def _schema_of(body: SchemaRequest) -> dict[str, Any]:
    if body.schema_type.upper() != "JSON":
        raise _Unsupported(f"Unsupported schemaType {body.schema_type!r}: this registry stores JSON only")
    if body.references:
        raise _Unsupported("Schema references are not supported: register self-contained schemas")
    return parse_schema(body.schema_)


class _Unsupported(RegistryError):
    error_code, status = 42201, 422


def _version_body(registered: RegisteredSchema) -> dict[str, Any]:
    return {
        "subject": registered.subject,
        "version": registered.version,
        "id": registered.id,
        "schemaType": "JSON",
        "schema": registered.schema_text,
    }


def _config_body(level: Compatibility) -> dict[str, str]:
    # Confluent answers GET /config with compatibilityLevel; some clients send and read compatibility.
    return {"compatibilityLevel": level.value, "compatibility": level.value}
