"""The platform's HTTP face: health, readiness, the index page and every component's routers."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from strowger import __version__
from strowger.bootstrap import Platform
from strowger.bus.pacing import LoopPacer
from strowger.ops.tracing import TracingMiddleware
from strowger.security import SecuritySettings, install_security, load_security_settings, route_path
from strowger.tmf.errors import JsonResponse, TmfRoute, unrouted_error

# Strowger traces its requests itself (TracingMiddleware: span, correlationId) and counts
# them in its own metrics; FastAPI's native telemetry would only duplicate them should a
# global OpenTelemetry provider ever be set, and deciding it is off costs ~2% of a POST.
NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    platform: Platform, security: SecuritySettings | None = None, *, freeze_heap: bool = False
) -> FastAPI:
    """The ASGI application serving ``platform``; starting it starts the platform.

    Every route but /health and /ready needs credentials (``security``, by default from the
    STROWGER_SECURITY_* environment); every request gets a span and a correlation id.
    ``freeze_heap``: the serving process (``strowger run``) sets it, see :func:`freeze_startup_heap`.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            await platform.stop()

    app = FastAPI(
        title="Strowger",
        version=__version__,
        default_response_class=JsonResponse,
        lifespan=lifespan,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    app.state.platform = platform

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["operations"])
    async def ready() -> JsonResponse:
        """Readiness: the platform has started and its database answers."""
        if not platform.started:
            return JsonResponse({"status": "starting"}, status_code=503)
        try:
            await platform.database.fetchone("SELECT 1")
        except Exception as exc:
            return JsonResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JsonResponse({"status": "ready", "database": platform.database.kind, "bus": platform.bus.kind})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        links = "".join(f'<li><a href="{href}">{title}</a></li>' for title, href in _index_links(app))
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Strowger</title></head>"
            f"<body><h1>Strowger {__version__}</h1><ul>{links}</ul></body></html>"
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        return Response(platform.metrics.exposition(), media_type=platform.metrics.content_type)

    app.add_exception_handler(StarletteHTTPException, unrouted_error)  # unknown path or method: a TMF Error
    for router in platform.routers:
        app.include_router(PrefixGate(router) if router.prefix else router)
    app.state.index_links = platform.index_links
    app.add_middleware(DirectRoutes, routes=direct_routes(platform.routers))  # innermost: after security
    install_security(app, security or load_security_settings())
    app.add_middleware(TracingMiddleware)  # the correlation id exists before anything else runs
    app.add_middleware(ServingMarker, pacer=platform.pacer)
    return app


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, schemas, routes, catalogs) out of every later full
    garbage collection: they live as long as the process, yet each full collection walked them
    all with the event loop stopped (up to 140 ms, three times in ten seconds of load).

    For a serving process only: what is frozen is never collected, so a test process starting
    many platforms would keep each one's leftovers.
    """
    gc.collect()
    gc.freeze()


class ServingMarker:
    """Tells the platform's pacer that HTTP requests are being served, so its consumers leave them
    their share of the event loop (:mod:`strowger.bus.pacing`)."""

    def __init__(self, app: ASGIApp, pacer: LoopPacer) -> None:
        self.app = app
        self.pacer = pacer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.pacer.begin()
        try:
            await self.app(scope, receive, send)
        finally:
            self.pacer.served(time.perf_counter() - started)


DirectTable = dict[tuple[str, str], ASGIApp]


def direct_routes(routers: Iterable[APIRouter]) -> DirectTable:
    """(method, path) → the route as a bare ASGI app, for every TMF route that can be served so
    (:meth:`TmfRoute.direct_app`): fixed paths whose endpoint takes the Request and returns a
    Response, such as every resource creation (``POST …/productOrder``). First route wins, as
    in routing."""
    table: DirectTable = {}
    for router in routers:
        for route in router.routes:
            if not isinstance(route, TmfRoute) or (direct := route.direct_app()) is None:
                continue
            for method in route.methods or ():
                table.setdefault((method, route.path), direct)
    return table


class DirectRoutes:
    """The innermost of Strowger's middlewares: a request for a route of the direct table goes
    straight to it; every other request goes on to FastAPI's exception middleware and router.

    Outside it, everything still applies to every request: FastAPI's server-error guard, the
    pacer's mark, tracing, authentication and the input limits. Inside, FastAPI would only
    find the route by trying each router in turn and wrap the call in machinery a route of
    the table does not use (measured: 100 to 150 µs of a ~1.2 ms POST).
    """

    def __init__(self, app: ASGIApp, routes: DirectTable) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct = self.routes.get((scope["method"], route_path(scope)))
            if direct is not None:
                await direct(scope, receive, send)
                return
        await self.app(scope, receive, send)


class PrefixGate(APIRouter):
    """One router whose paths all start with its prefix: other requests skip its routes in one test.

    FastAPI tries every route of every included router in turn, each try costing several
    scope lookups and a regex; with a dozen TMF APIs that was a fifth of a POST's CPU. A route
    of ``APIRouter(prefix=p)`` always has a path starting with ``p``, so a request elsewhere
    cannot match (fully or partially) any of them: answering NONE changes no routing decision.
    """

    def __init__(self, router: APIRouter) -> None:
        super().__init__()
        self.path_prefix = router.prefix
        self.include_router(router)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not route_path(scope).startswith(self.path_prefix):
            return Match.NONE, {}
        return super().matches(scope)


def _index_links(app: FastAPI) -> list[tuple[str, str]]:
    links = [
        ("Health", "/health"),
        ("Readiness", "/ready"),
        ("Metrics", "/metrics"),
        ("OpenAPI", "/openapi.json"),
    ]
    links.extend(getattr(app.state, "index_links", []))
    return links
