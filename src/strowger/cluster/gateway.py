"""The cluster's one HTTP entry point: forwards each request by path prefix to a ready instance.

Routes come from the component catalogue (``http_apis``, the longest prefix wins), so a path
served by a component is reachable through the gateway without anyone knowing its port. A
prober asks every instance's ``/ready`` each second; requests rotate (round robin) over the
ready instances of the component, and a refused connection (an instance killed since the
last probe) marks it unready and moves on to the next. No ready instance: 503; a path no
component serves: 404; both with the TMF Error body.

It runs as its own process (``strowger cluster gateway``), as an Ingress controller does in
Kubernetes: chaos can kill it, and its event loop never competes with a component's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from strowger.components.registry import COMPONENTS
from strowger.security.cookies import no_cookie_jar
from strowger.tmf.errors import error_body

PROBE_INTERVAL = 1.0  # seconds between two /ready probes of an instance
# Connection-level headers of one hop (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection"}
)  # fmt: skip
# Safe to send to a second instance after the first broke the connection mid-request.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_BODY = 16 * 1024 * 1024  # bytes buffered per request; every component's own limits are lower
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def catalogue_routes() -> list[tuple[str, str]]:
    """(API base path, component) for every available component, the longest path first."""
    routes = [(api, c.name) for c in COMPONENTS if c.available for api in c.http_apis]
    return sorted(routes, key=lambda route: -len(route[0]))


class Backends:
    """The instances of each component, which of them answer /ready, and whose turn it is."""

    def __init__(self, instances: Mapping[str, Sequence[str]]) -> None:
        self.instances = {component: list(urls) for component, urls in instances.items()}
        self.ready: dict[str, bool] = {url: False for urls in self.instances.values() for url in urls}
        self._turns = {component: itertools.count() for component in self.instances}
        self.probed = asyncio.Event()  # set after the first round: the gateway's own /ready

    def candidates(self, component: str) -> list[str]:
        """The ready instances of ``component``, starting with the one whose turn it is."""
        urls = self.instances.get(component, [])
        if not urls:
            return []
        start = next(self._turns[component])
        rotated = [urls[(start + offset) % len(urls)] for offset in range(len(urls))]
        return [url for url in rotated if self.ready[url]]

    async def probe(self, client: httpx.AsyncClient) -> None:
        results = await asyncio.gather(*(self._is_ready(client, url) for url in self.ready))
        self.ready.update(zip(self.ready, results, strict=True))
        self.probed.set()

    async def probe_forever(self, client: httpx.AsyncClient) -> None:
        while True:
            await self.probe(client)
            await asyncio.sleep(PROBE_INTERVAL)

    @staticmethod
    async def _is_ready(client: httpx.AsyncClient, url: str) -> bool:
        try:
            return (await client.get(f"{url}/ready", timeout=PROBE_INTERVAL)).status_code == 200
        except httpx.HTTPError:
            return False


def route_for(routes: Sequence[tuple[str, str]], path: str) -> str | None:
    for api, component in routes:
        if path == api or path.startswith(api + "/"):
            return component
    return None


def tmf_error(status: int, code: str, reason: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, code, reason, message), status_code=status)


def create_gateway(instances: Mapping[str, Sequence[str]]) -> Starlette:
    """The gateway app over ``instances`` (component -> base URLs such as http://127.0.0.1:8001)."""
    backends = Backends(instances)
    routes = catalogue_routes()
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=2.0),
        limits=httpx.Limits(max_connections=200),
        cookies=no_cookie_jar(),  # Set-Cookie goes to the caller, never into this shared client
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        prober = asyncio.create_task(backends.probe_forever(client))
        try:
            yield
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
            await client.aclose()

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        body = {"instances": backends.ready}
        return JSONResponse(body, status_code=200 if backends.probed.is_set() else 503)

    async def forward(request: Request) -> Response:
        component = route_for(routes, request.url.path)
        if component is None:
            return tmf_error(404, "notFound", "Not found", f"no component serves {request.url.path}")
        body = await _read_body(request)  # kept, so a second instance can be sent the same request
        if body is None:
            return tmf_error(413, "payloadTooLarge", "Payload too large", f"over {MAX_BODY} bytes")
        for url in backends.candidates(component):
            try:
                upstream = await client.send(_upstream_request(client, request, url, body), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                backends.ready[url] = False  # killed since the last probe: the next one answers
                continue
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                backends.ready[url] = False
                if request.method in IDEMPOTENT:
                    continue
                return tmf_error(502, "badGateway", "Bad gateway", f"{component}: {type(exc).__name__}")
            except httpx.TimeoutException:
                return tmf_error(504, "gatewayTimeout", "Gateway timeout", f"{component} did not answer")
            return _downstream_response(upstream)
        return tmf_error(
            503, "serviceUnavailable", "Service unavailable", f"no ready instance of {component}"
        )

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/{path:path}", forward, methods=METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.backends = backends
    return app


async def _read_body(request: Request) -> bytes | None:
    """The whole body, or None past MAX_BODY (never buffered without bound)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _upstream_request(client: httpx.AsyncClient, request: Request, base: str, body: bytes) -> httpx.Request:
    """The same method, raw path, query, headers (Host kept: absolute links name the gateway) and body."""
    headers = [(name, value) for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP]
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    headers.append(("x-forwarded-for", f"{forwarded}, {peer}" if forwarded else peer))
    path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    target = f"{base}{path}?{query}" if query else f"{base}{path}"
    return client.build_request(request.method, target, headers=headers, content=body)


def _downstream_response(upstream: httpx.Response) -> Response:
    """Status, headers (Location, Content-Encoding...) and raw body bytes as the instance sent them."""
    response = StreamingResponse(
        upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
    )
    response.raw_headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in upstream.headers.multi_items()
        if name.lower() not in HOP_BY_HOP
    ]
    return response
