"""The cluster gateway on real ports: small Starlette apps stand in for the component processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strowger.cluster.gateway import create_gateway
from strowger.cluster.plan import free_port

ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"
SAGAS = "/sagas"  # served by service-ordering
BILLS = "/tmf-api/customerBillManagement/v4/customerBill"  # billing: no instance runs in these tests


class Server:
    """One uvicorn server in this event loop, on a port of its own, until ``stop``."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Server:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def component(name: str, *, ready: bool = True) -> Starlette:
    """Answers /ready, echoes what it was sent, and creates with a Location header."""

    async def probe(_: Request) -> Response:
        return JSONResponse({}, status_code=200 if ready else 503)

    async def echo(request: Request) -> Response:
        body = {
            "instance": name,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "apiKey": request.headers.get("x-api-key"),
            "correlation": request.headers.get("x-correlation-id"),
            "body": (await request.body()).decode(),
            "cookie": request.headers.get("cookie"),
        }
        if request.url.query == "set-cookie":
            return JSONResponse(body, headers={"Set-Cookie": f"session={name}; Path=/"})
        if request.method == "POST":
            return JSONResponse(body, status_code=201, headers={"Location": f"{request.url.path}/42"})
        return JSONResponse(body)

    return Starlette(routes=[Route("/ready", probe), Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture
async def stand_ins() -> AsyncIterator[dict[str, Server]]:
    servers = {
        "ordering": await Server(component("ordering")).start(),
        "som-1": await Server(component("som-1")).start(),
        "som-2": await Server(component("som-2")).start(),
        "unready": await Server(component("unready", ready=False)).start(),
    }
    yield servers
    await asyncio.gather(*(server.stop() for server in servers.values()), return_exceptions=True)


@pytest.fixture
async def gateway(stand_ins: dict[str, Server]) -> AsyncIterator[httpx.AsyncClient]:
    instances = {
        "ordering": [stand_ins["ordering"].url],
        "service-ordering": [stand_ins["som-1"].url, stand_ins["som-2"].url],
        "billing": [stand_ins["unready"].url],
    }
    server = await Server(create_gateway(instances)).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with asyncio.timeout(10):
            while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110 (polling HTTP)
                await asyncio.sleep(0.1)
        yield client
    await server.stop()


async def test_routes_by_path_and_forwards_request_and_answer_unchanged(gateway: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": "secret", "X-Correlation-ID": "corr-1"}
    created = await gateway.post(f"{ORDERS}?fields=id", content=b'{"a": 1}', headers=headers)
    assert created.status_code == 201
    assert created.headers["location"] == f"{ORDERS}/42"
    assert created.json() == {
        "instance": "ordering",
        "method": "POST",
        "path": ORDERS,
        "query": "fields=id",
        "apiKey": "secret",
        "correlation": "corr-1",
        "body": '{"a": 1}',
        "cookie": None,
    }
    sagas = await gateway.get(f"{SAGAS}/abc")
    assert sagas.status_code == 200 and sagas.json()["instance"] in ("som-1", "som-2")


async def test_a_cookie_reaches_its_caller_and_is_not_kept_for_others(gateway: httpx.AsyncClient) -> None:
    first = await gateway.get(f"{ORDERS}?set-cookie")
    assert first.headers["set-cookie"] == "session=ordering; Path=/"
    gateway.cookies.clear()  # this caller kept it; a different caller has no cookie
    assert (await gateway.get(ORDERS)).json()["cookie"] is None
    own = await gateway.get(ORDERS, headers={"Cookie": "mine=1"})
    assert own.json()["cookie"] == "mine=1"  # a caller's own cookie still goes through


async def test_round_robin_over_instances(gateway: httpx.AsyncClient) -> None:
    answered = {(await gateway.get(SAGAS)).json()["instance"] for _ in range(4)}
    assert answered == {"som-1", "som-2"}


async def test_unknown_path_is_a_tmf_404(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.get("/tmf-api/nothingHere/v4/thing")
    assert answer.status_code == 404
    assert answer.json()["@type"] == "Error" and answer.json()["status"] == "404"
    assert set(answer.json()) == {"code", "reason", "message", "status", "@type"}


async def test_no_ready_instance_is_a_tmf_503(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.get(BILLS)  # its only instance answers /ready 503
    assert answer.status_code == 503
    assert answer.json()["code"] == "serviceUnavailable" and answer.json()["status"] == "503"
    unrun = await gateway.get("/analytics/orders")  # a component the cluster runs no instance of
    assert unrun.status_code == 503


async def test_a_killed_instance_is_skipped(stand_ins: dict[str, Server], gateway: httpx.AsyncClient) -> None:
    await stand_ins["som-1"].stop()  # before the next probe: the refused connection fails over
    answered = [(await gateway.get(SAGAS)).json()["instance"] for _ in range(4)]
    assert answered == ["som-2"] * 4
    assert (await gateway.get("/health")).status_code == 200


async def test_a_body_over_the_limit_is_a_413_not_buffered(gateway: httpx.AsyncClient) -> None:
    from strowger.cluster.gateway import MAX_BODY

    answer = await gateway.post(ORDERS, content=b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413 and answer.json()["status"] == "413"
