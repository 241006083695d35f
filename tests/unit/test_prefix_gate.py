"""``PrefixGate`` (app.py) skips a router's routes for paths outside its prefix and changes no answer."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI

from strowger.app import PrefixGate

REQUESTS = [
    ("GET", "/tmf-api/a/v4/thing"),  # matched
    ("GET", "/tmf-api/a/v4/thing/7"),  # matched with a path parameter
    ("POST", "/tmf-api/a/v4/thing"),  # the path matches, the method does not: 405
    ("GET", "/tmf-api/a/v4/thing/"),  # trailing slash: redirected
    ("GET", "/tmf-api/b/v4/other"),  # the next router's route
    ("GET", "/tmf-api/a/v4"),  # the prefix alone: no route
    ("GET", "/elsewhere"),  # unknown: 404
]


def build(gated: bool) -> FastAPI:
    first = APIRouter(prefix="/tmf-api/a/v4")
    second = APIRouter(prefix="/tmf-api/b/v4")

    @first.get("/thing")
    async def thing() -> dict[str, str]:
        return {"route": "thing"}

    @first.get("/thing/{id}")
    async def one(id: str) -> dict[str, str]:
        return {"route": "one", "id": id}

    @second.get("/other")
    async def other() -> dict[str, str]:
        return {"route": "other"}

    app = FastAPI()
    for router in (first, second):
        app.include_router(PrefixGate(router) if gated else router)
    return app


async def answers(app: FastAPI) -> list[tuple[int, str]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        results = []
        for method, path in REQUESTS:
            response = await client.request(method, path)
            results.append((response.status_code, response.headers.get("location", "") or response.text))
        return results


async def test_a_gated_app_answers_every_request_as_the_plain_app_does() -> None:
    plain, gated = await answers(build(gated=False)), await answers(build(gated=True))
    assert gated == plain
    assert [status for status, _ in gated] == [200, 200, 405, 307, 200, 404, 404]


async def test_behind_a_proxy_the_gate_reads_the_path_under_the_root_path() -> None:
    for gated in (False, True):
        transport = httpx.ASGITransport(app=build(gated), root_path="/proxy")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/proxy/tmf-api/a/v4/thing/9")
        assert response.status_code == 200, gated
        assert response.json() == {"route": "one", "id": "9"}
