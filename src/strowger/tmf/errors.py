"""TMF630 error responses: one exception type, one body shape, one route class that never leaks a 500.

Every TMF API answers an error with the TMF ``Error`` resource::

    {"code": "invalidBodyField", "reason": "...", "message": "...", "status": "400", "@type": "Error"}

``status`` is a string, as the TMF schema declares it. :class:`TmfRoute` turns
every exception raised while serving a request (ours, FastAPI's request
validation, HTTPException, a bug) into that body, so a router built with it is
self-contained: it behaves the same whichever application includes it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from strowger.errors import (
    ConcurrencyConflict,
    InvalidStateTransition,
    NotFound,
    PermanentError,
    SchemaViolation,
    ServiceUnavailable,
    StrowgerError,
)

log = logging.getLogger("strowger.tmf")


class JsonResponse(JSONResponse):
    """A JSON response rendered with orjson (FastAPI deprecates its ORJSONResponse).

    A JSONResponse subclass so FastAPI documents it as JSON: its placeholder for
    other response classes (``{"type": "string"}``) would otherwise be merged
    into the declared response schemas and contradict them.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An error answered to the client as a TMF ``Error`` body with HTTP ``status``."""

    status = 500
    code = "internalError"
    reason = "Internal error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.reason, self.message)


class BadRequest(ApiError):
    """The request is malformed: bad JSON, wrong type, missing or read-only field, bad query."""

    status = 400
    code = "invalidRequest"
    reason = "Bad request"


class ResourceNotFound(ApiError):
    status = 404
    code = "notFound"
    reason = "Resource not found"


class Conflict(ApiError):
    """The request is well formed but not allowed in the resource's current state."""

    status = 409
    code = "conflict"
    reason = "Conflict with the resource's current state"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payloadTooLarge"
    reason = "Request body too large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupportedMediaType"
    reason = "Unsupported content type"


class Unavailable(ApiError):
    """The database or broker is out of reach for a moment: the client should retry (not a 500)."""

    status = 503
    code = "serviceUnavailable"
    reason = "Service temporarily unavailable"


def error_body(status: int, code: str, reason: str, message: str) -> dict[str, Any]:
    """The TMF Error resource."""
    return {"code": code, "reason": reason, "message": message, "status": str(status), "@type": "Error"}


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status_code=error.status)


def as_api_error(exc: Exception) -> ApiError:
    """The TMF error to answer for ``exc`` (anything unknown is a logged 500 without details)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, NotFound):
        return ResourceNotFound(str(exc))
    if isinstance(exc, ConcurrencyConflict):
        return Conflict(f"{exc}; read the resource again and retry", code="staleVersion")
    if isinstance(exc, InvalidStateTransition):
        return Conflict(str(exc), code="invalidStateTransition")
    if isinstance(exc, SchemaViolation):
        # The resource this request would publish breaks its TMF event schema: a field the
        # specification requires is missing or malformed in the request (the message names it).
        return BadRequest(str(exc), code="invalidBodyField")
    if isinstance(exc, ServiceUnavailable):
        log.warning("answering 503: %s", exc)
        return Unavailable("A backing service is unavailable for a moment; retry the request.")
    log.exception("unexpected error while serving a TMF request", exc_info=exc)
    return ApiError("The server failed to process the request; it has been logged.")


def domain_error(error: ApiError) -> StrowgerError:
    """The platform error for ``error`` raised on a server-side write path (an event handler).

    The consumer runtime retries or dead-letters by class: every refusal the
    TMF rules make is permanent (the same event would be refused again).
    """
    if isinstance(error, ResourceNotFound):
        return NotFound(error.message)
    if isinstance(error, Conflict) and error.code == "invalidStateTransition":
        return InvalidStateTransition(error.message)
    if isinstance(error, BadRequest):
        return SchemaViolation(error.message)
    return PermanentError(f"{error.code}: {error.message}")


@contextmanager
def domain_errors() -> Iterator[None]:
    """Re-raise TMF API errors as :func:`domain_error` s (for Python callers of the toolkit)."""
    try:
        yield
    except ApiError as exc:
        raise domain_error(exc) from exc


def _validation_error(exc: RequestValidationError) -> BadRequest:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(location) or None
    detail = first.get("msg", "invalid request")
    message = f"{field}: {detail}" if field else str(detail)
    return BadRequest(message, field=field, code="invalidParameter")


def _http_error(exc: HTTPException) -> ApiError:
    error = ApiError(str(exc.detail), code=f"http{exc.status_code}")
    error.status = exc.status_code
    error.reason = "Request refused"
    return error


async def unrouted_error(request: Request, exc: Exception) -> Response:
    """An error raised outside every TMF route, as a TMF ``Error`` body: no route for the path
    (404), a method the path does not serve (405, with its ``Allow``), or another HTTP error.

    An application exception handler (``app.add_exception_handler(StarletteHTTPException, …)``):
    routing answers before any route, so :class:`TmfRoute` never sees these.
    """
    status = getattr(exc, "status_code", 500)
    headers = dict(getattr(exc, "headers", None) or {})
    where = f"{request.method} {request.url.path}"
    if status == 404:
        body = error_body(404, "notFound", "Not found", f"nothing is served at {request.url.path}")
    elif status == 405:
        body = error_body(405, "methodNotAllowed", "Method not allowed", f"{where} is not served")
    else:
        body = error_body(status, f"http{status}", "Request refused", str(getattr(exc, "detail", exc)))
    return JsonResponse(body, status_code=status, headers=headers)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class TmfRoute(APIRoute):
    """An APIRoute that answers every failure with a TMF Error body (never a bare 500 page).

    Installed per router (``APIRouter(route_class=TmfRoute)``) rather than as
    application exception handlers, so the TMF error contract travels with
    the router into whatever application includes it.
    """

    def get_route_handler(self) -> Handler:
        serve = self._direct_handler() or super().get_route_handler()
        return _answering_errors(serve)

    def direct_app(self) -> ASGIApp | None:
        """The route as a bare ASGI app when FastAPI's request machinery has nothing to do for it
        (see :meth:`_direct_handler`) and its path has no parameter; else None.

        :class:`strowger.app.DirectRoutes` serves these without FastAPI's router, exception
        middleware and request wrapper (a tenth of a POST's CPU); the answer is the same.
        """
        direct = self._direct_handler()
        if direct is None or self.param_convertors:
            return None
        handler = _answering_errors(direct)
        route = self

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # What routing would have put in the scope (tracing names the span after the route).
            scope.update(route=route, endpoint=route.endpoint, path_params={})
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        return app

    def _direct_handler(self) -> Handler | None:
        """The endpoint itself when its only parameter is the Request and it returns a Response.

        FastAPI would then read no parameter, solve no dependency and convert no result, yet
        its request handler still costs ~5% of a POST (body and dependency machinery, exit
        stacks, endpoint context). Anything else (path or query parameters, dependencies, a
        response model, a result to convert) keeps FastAPI's handler.
        """
        dependant = self.dependant
        parameters = (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.body_params,
            dependant.dependencies,
        )
        others = (
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
        )
        returns = _return_type(self.endpoint)
        if (
            any(parameters)
            or any(name is not None for name in others)
            or dependant.request_param_name is None
            or self.response_field is not None
            or not (isinstance(returns, type) and issubclass(returns, Response))
            or not inspect.iscoroutinefunction(self.endpoint)
        ):
            return None
        endpoint, name = self.endpoint, dependant.request_param_name

        async def direct(request: Request) -> Response:
            response: Response = await endpoint(**{name: request})
            return response

        return direct


def _answering_errors(serve: Handler) -> Handler:
    async def handler(request: Request) -> Response:
        try:
            return await serve(request)
        except Exception as exc:
            return error_response(as_api_error(exc))

    return handler


def _return_type(endpoint: Callable[..., Any]) -> Any:
    """The endpoint's return annotation, resolved (None if it cannot be)."""
    try:
        return inspect.signature(endpoint, eval_str=True).return_annotation
    except (NameError, TypeError, SyntaxError):
        return None
