"""The platform's HTTP face: health, readiness, the index page and every component's routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, ORJSONResponse

from strowger import __version__
from strowger.bootstrap import Platform


def create_app(platform: Platform) -> FastAPI:
    """The ASGI application serving ``platform``; starting it starts the platform."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    app = FastAPI(
        title="Strowger",
        version=__version__,
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.platform = platform

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["operations"])
    async def ready() -> ORJSONResponse:
        """Readiness: the platform has started and its database answers."""
        if not platform.started:
            return ORJSONResponse({"status": "starting"}, status_code=503)
        try:
            await platform.database.fetchone("SELECT 1")
        except Exception as exc:
            return ORJSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return ORJSONResponse(
            {"status": "ready", "database": platform.database.kind, "bus": platform.bus.kind}
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        links = "".join(f'<li><a href="{href}">{title}</a></li>' for title, href in _index_links(app))
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Strowger</title></head>"
            f"<body><h1>Strowger {__version__}</h1><ul>{links}</ul></body></html>"
        )

    for router in platform.routers:
        app.include_router(router)
    return app


def _index_links(app: FastAPI) -> list[tuple[str, str]]:
    links = [("Health", "/health"), ("Readiness", "/ready"), ("OpenAPI", "/openapi.json")]
    links.extend(getattr(app.state, "index_links", []))
    return links
