"""Authentication and authorisation for a whole ASGI application, plus the handler-side dependencies.

One middleware guards every route, so a router added later is protected
without anyone remembering to add a dependency: the route table derives the
required scope from the path and method (:mod:`strowger.security.scopes`).
Handlers read the caller with the :func:`current_principal` dependency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from strowger.security.auth import (
    Authenticator,
    Forbidden,
    MissingCredentials,
    Principal,
    Unauthenticated,
    headers_of,
)
from strowger.security.limits import InputLimitMiddleware, InputLimits
from strowger.security.scopes import Access, Requirement, RouteTable, Rule, grants, needs
from strowger.security.settings import SecuritySettings
from strowger.tmf.errors import ApiError, JsonResponse, error_response

log = logging.getLogger("strowger.security")

REALM = "strowger"
PRINCIPAL = "principal"  # key of the caller in the request state


class AuthMiddleware:
    """Refuses a request without valid credentials (401) or without the required scope (403)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, routes: RouteTable) -> None:
        self.app = app
        self.authenticator = authenticator
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        requirement = self.routes.requirement(method, route_path(scope))
        if requirement.access is Access.PUBLIC:
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticator.authenticate(headers_of(scope.get("headers", ())))
        except Unauthenticated as error:
            await _refuse(scope, receive, send, _unauthenticated(error))
            return
        if not grants(principal.scopes, requirement):
            log.warning(
                "access refused",
                extra={"subject": principal.subject, "method": method, "path": scope["path"]},
            )
            await _refuse(scope, receive, send, _forbidden(principal, requirement))
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path the application routes on (without the root path a proxy mounts it under)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _unauthenticated(error: Unauthenticated) -> JsonResponse:
    challenge = f'Bearer realm="{REALM}"'
    if not isinstance(error, MissingCredentials):  # RFC 6750: no error code when nothing was sent
        challenge += ', error="invalid_token"'
    return JsonResponse(error.body(), status_code=401, headers={"WWW-Authenticate": challenge})


def _forbidden(principal: Principal, requirement: Requirement) -> JsonResponse:
    error = Forbidden(f"{principal.subject} lacks the scope {requirement.scope!r} this request needs")
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{requirement.scope}"'
    return JsonResponse(error.body(), status_code=403, headers={"WWW-Authenticate": challenge})


async def _refuse(scope: Scope, receive: Receive, send: Send, response: JsonResponse) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # policy violation
        return
    await response(scope, receive, send)


# --- for handlers -------------------------------------------------------------------------------


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (set by :class:`AuthMiddleware`)."""
    principal = getattr(request.state, PRINCIPAL, None)
    if not isinstance(principal, Principal):
        # Fail closed: a handler asking who called must never run for nobody.
        raise MissingCredentials()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """FastAPI dependency factory: the caller, who must hold ``scope`` (a check inside a route)."""
    requirement = needs(scope)

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if not grants(principal.scopes, requirement):
            raise Forbidden(f"{principal.subject} lacks the scope {scope!r} this request needs")
        return principal

    return dependency


# --- wiring -------------------------------------------------------------------------------------


def install_security(
    app: FastAPI, settings: SecuritySettings, *, overrides: Iterable[Rule] = ()
) -> Authenticator:
    """Guard every route of ``app`` and enforce the input limits; returns the authenticator.

    Authentication runs first (outermost) so an anonymous caller never gets
    its body read or parsed.
    """
    app.add_middleware(InputLimitMiddleware, limits=InputLimits.from_settings(settings))
    authenticator = Authenticator(settings)
    routes = RouteTable(overrides, public_paths=settings.public_paths)
    app.add_middleware(AuthMiddleware, authenticator=authenticator, routes=routes)
    app.state.route_scopes = routes
    _document_security(app, settings.public_paths)
    # So current_principal and require_scope answer 401/403 from any route, not only TMF ones.
    for error_class in (Unauthenticated, Forbidden):
        app.add_exception_handler(error_class, _api_error_handler)
    return authenticator


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _document_security(app: FastAPI, public_paths: Iterable[str]) -> None:
    """Declare both credential kinds in the OpenAPI document (Swagger UI's Authorize button)."""
    build = app.openapi
    public = set(public_paths)

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI caches it; the additions below are idempotent
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        schema["security"] = [{"bearerAuth": []}, {"apiKey": []}]
        for path, item in schema.get("paths", {}).items():
            if path in public:
                for operation in item.values():
                    operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _api_error_handler(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, ApiError)
    response = error_response(exc)
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = _unauthenticated(exc).headers["WWW-Authenticate"]
    return response
