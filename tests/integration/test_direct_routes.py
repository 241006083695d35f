"""Routes served without FastAPI's router (``strowger.app.DirectRoutes``) answer exactly as before:
every middleware outside the lane (tracing, authentication, input limits) still applies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request, Response
from starlette.types import Receive, Scope, Send

from strowger.app import DirectRoutes, create_app, direct_routes
from strowger.bootstrap import bootstrap
from strowger.components.ordering.service import BASE_PATH
from strowger.security import hash_api_key
from strowger.security.settings import ApiKeyEntry, SecuritySettings
from strowger.settings import Settings
from strowger.tmf.errors import JsonResponse, TmfRoute

KEY = "stw_direct-routes-test-key-0123456789abcdef"
ORDERS = f"{BASE_PATH}/productOrder"
ORDER = {"productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}]}


def sample_router() -> APIRouter:
    router = APIRouter(prefix="/api", route_class=TmfRoute)

    @router.post("/thing")
    async def create(request: Request) -> Response:
        return JsonResponse({"made": True, "route": request.scope["route"].path}, status_code=201)

    @router.get("/thing/{thing_id}")
    async def read(request: Request) -> Response:
        return JsonResponse({})

    @router.get("/typed")
    async def typed(limit: int = 10) -> dict[str, Any]:
        return {"limit": limit}

    @router.post("/failing")
    async def failing(request: Request) -> Response:
        raise RuntimeError("boom")

    return router


def test_only_fixed_paths_of_request_only_endpoints_are_direct() -> None:
    table = direct_routes([sample_router()])
    assert set(table) == {("POST", "/api/thing"), ("POST", "/api/failing")}


async def test_a_direct_route_is_served_without_the_app_behind_and_a_failure_is_a_tmf_error() -> None:
    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} reached the router")

    lane = DirectRoutes(behind, direct_routes([sample_router()]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(lane), base_url="http://test") as http:
        made = await http.post("/api/thing", json={})
        assert (made.status_code, made.json()) == (201, {"made": True, "route": "/api/thing"})
        failed = await http.post("/api/failing", json={})
        assert failed.status_code == 500
        assert set(failed.json()) >= {"code", "reason", "message", "status", "@type"}
        with pytest.raises(AssertionError, match="reached the router"):
            await http.get("/api/thing/7")


@pytest.fixture
async def platform_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))
    entry = ApiKeyEntry(name="clerk", sha256=hash_api_key(KEY), scopes=("admin",))
    security = SecuritySettings(api_keys=(entry,), api_keys_file=None, max_body_bytes=4096)
    app = create_app(platform, security)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger") as http:
            yield http


async def test_the_platform_serves_order_creation_directly(tmp_path: Path) -> None:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))
    assert ("POST", ORDERS) in direct_routes(platform.routers)


async def test_a_direct_post_still_passes_tracing_security_and_input_limits(
    platform_http: httpx.AsyncClient,
) -> None:
    assert (await platform_http.post(ORDERS, json=ORDER)).status_code == 401
    signed = {"X-API-Key": KEY, "X-Correlation-ID": "crm-42"}
    too_large = await platform_http.post(ORDERS, content=b"{" + b" " * 5000 + b"}", headers=signed)
    assert too_large.status_code == 413
    malformed = await platform_http.post(
        ORDERS, content=b'{"productOrderItem": [', headers={**signed, "Content-Type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["code"]) == (400, "invalidBody")
    created = await platform_http.post(ORDERS, json=ORDER, headers=signed)
    assert created.status_code == 201
    assert created.headers["X-Correlation-ID"] == "crm-42"
    order = created.json()
    assert created.headers["Location"] == order["href"] and order["state"] == "acknowledged"
    listed = await platform_http.get(ORDERS, params={"fields": "state"}, headers=signed)
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "1"
    assert listed.json() == [
        {"id": order["id"], "href": order["href"], "@type": "ProductOrder", "state": "acknowledged"}
    ]
    fetched = await platform_http.get(f"{ORDERS}/{order['id']}", headers=signed)  # through FastAPI
    assert fetched.status_code == 200 and fetched.json()["id"] == order["id"]
