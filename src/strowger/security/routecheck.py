"""Checks that an application opens nothing by accident: every route answers 401 without credentials.

Routes are enumerated from the application's OpenAPI document (every
operation it publishes) plus the routes it hides from the document, then
called without credentials through ``httpx.ASGITransport`` (no server, no
lifespan: the check needs no database).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import httpx
from fastapi import FastAPI
from starlette.routing import Route

from strowger.security.scopes import DEFAULT_PUBLIC_PATHS, PUBLIC_PAGES

_OPEN_BY_DESIGN = (*DEFAULT_PUBLIC_PATHS, *PUBLIC_PAGES)
_PARAMETER = re.compile(r"\{[^}/]+\}")
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def enumerate_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation: the OpenAPI ones, then the hidden routes."""
    found: list[tuple[str, str]] = []
    for path, item in app.openapi().get("paths", {}).items():
        found.extend((method.upper(), path) for method in _METHODS if method in item)
    for route in app.routes:
        if isinstance(route, Route) and not route.include_in_schema:
            found.extend((method, route.path_format) for method in sorted(route.methods or ()))
    return sorted(set(found))


async def unprotected_operations(app: FastAPI, *, public_paths: Iterable[str] = _OPEN_BY_DESIGN) -> list[str]:
    """Every operation (outside ``public_paths``) that does NOT answer 401 without credentials.

    Path parameters are filled with a placeholder; an empty list means the app is closed.
    """
    public = set(public_paths)
    failures = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://routecheck") as client:
        for method, template in enumerate_operations(app):
            if template in public:
                continue
            path = _PARAMETER.sub("placeholder", template)
            response = await client.request(method, path, json={} if method in _BODY_METHODS else None)
            if (
                response.status_code != 401
                or "bearer" not in response.headers.get("www-authenticate", "").lower()
            ):
                failures.append(f"{method} {template} -> {response.status_code}")
    return failures


_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def assert_all_routes_protected(app: FastAPI, *, public_paths: Iterable[str] = _OPEN_BY_DESIGN) -> int:
    """Raise AssertionError listing every route open without credentials; returns how many were checked."""
    failures = await unprotected_operations(app, public_paths=public_paths)
    assert not failures, "routes answering without credentials: " + "; ".join(failures)
    return len([op for op in enumerate_operations(app) if op[1] not in set(public_paths)])
