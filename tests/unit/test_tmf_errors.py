"""TMF Error bodies: every failure of a TMF route, expected or not, answers the TMF shape."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response

from strowger.errors import ConcurrencyConflict, ServiceUnavailable
from strowger.tmf.errors import BadRequest, Conflict, JsonResponse, TmfRoute, as_api_error, error_body
from strowger.tmf.resources import Lifecycle, schema_validator


def app_with_failures() -> FastAPI:
    router = APIRouter(route_class=TmfRoute)

    @router.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret internal detail")

    @router.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout")

    @router.get("/typed/{number}")
    async def typed(number: int) -> int:
        return number

    app = FastAPI()
    app.include_router(router)
    return app


async def get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app_with_failures(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_a_bug_is_a_500_error_body_without_details(caplog: pytest.LogCaptureFixture) -> None:
    response = await get("/bug")
    assert response.status_code == 500
    assert response.json()["status"] == "500" and "secret" not in response.text
    assert "secret internal detail" in caplog.text  # logged for the operator


async def test_http_exceptions_and_validation_errors_keep_the_tmf_shape() -> None:
    teapot = await get("/teapot")
    assert teapot.status_code == 418 and teapot.json()["message"] == "short and stout"
    typed = await get("/typed/abc")
    assert typed.status_code == 400
    assert typed.json()["message"].startswith("number:")
    assert set(typed.json()) == {"code", "reason", "message", "status", "@type"}


def test_domain_errors_map_to_http_statuses() -> None:
    assert as_api_error(ConcurrencyConflict("x")).status == 409
    assert error_body(404, "notFound", "Not found", "m") == {
        "code": "notFound",
        "reason": "Not found",
        "message": "m",
        "status": "404",
        "@type": "Error",
    }


def test_an_unreachable_database_is_a_503_to_retry_not_a_500() -> None:
    error = as_api_error(
        ServiceUnavailable("PostgreSQL: terminating connection due to administrator command")
    )
    assert (error.status, error.code) == (503, "serviceUnavailable")
    assert "PostgreSQL" not in error.message  # the client learns to retry, not our topology


def test_lifecycle_moves() -> None:
    lifecycle = Lifecycle("state", "a", {"a": frozenset({"b"}), "b": frozenset()})
    lifecycle.check_move("a", "b")
    lifecycle.check_move("b", "b")  # unchanged is always allowed
    with pytest.raises(Conflict):
        lifecycle.check_move("b", "a")
    with pytest.raises(BadRequest):
        lifecycle.check_move("a", "z")


def test_schema_validator_names_nested_fields() -> None:
    definitions = {
        "Thing": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "period": {"$ref": "#/definitions/Period"}},
        },
        "Period": {"type": "object", "properties": {"start": {"type": "string"}}},
    }
    validate = schema_validator(definitions, "Thing")
    validate({"name": "x", "period": {"start": "now"}, "extra": [1]})
    with pytest.raises(BadRequest) as missing:
        validate({})
    assert missing.value.field == "name"
    with pytest.raises(BadRequest) as wrong:
        validate({"name": "x", "period": {"start": 1}})
    assert wrong.value.field == "period.start"


def request_only_routes() -> tuple[FastAPI, dict[str, TmfRoute]]:
    router = APIRouter(route_class=TmfRoute)

    @router.post("/echo")
    async def echo(request: Request) -> Response:
        return JsonResponse({"length": len(await request.body())}, status_code=201)

    @router.post("/refuse")
    async def refuse(request: Request) -> Response:
        raise BadRequest("no", field="x")

    @router.get("/plain")
    async def plain(request: Request) -> dict[str, str]:
        return {"converted": "by FastAPI"}

    app = FastAPI()
    app.include_router(router)
    routes = {route.path: route for route in router.routes if isinstance(route, TmfRoute)}
    return app, routes


def test_only_request_to_response_endpoints_skip_fastapis_handler() -> None:
    _, routes = request_only_routes()
    assert routes["/echo"]._direct_handler() is not None
    assert routes["/refuse"]._direct_handler() is not None
    assert routes["/plain"]._direct_handler() is None  # a result to convert


async def test_endpoints_called_directly_answer_as_through_fastapi() -> None:
    app, _ = request_only_routes()
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        echoed = await client.post("/echo", content=b"12345")
        refused = await client.post("/refuse")
        plain = await client.get("/plain")
    assert (echoed.status_code, echoed.json()) == (201, {"length": 5})
    assert refused.status_code == 400 and refused.json()["@type"] == "Error"
    assert plain.json() == {"converted": "by FastAPI"}
