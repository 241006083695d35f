"""The dashboard over HTTP: the page at ``/dashboard`` and its data under ``/dashboard/api``.

The page is one self-contained HTML document (its CSS, its script and the
vendored uPlot are inlined) so it works offline and needs one route only. It
holds no data: it asks for an API key, keeps it in ``sessionStorage`` and
sends it as ``X-API-Key`` on every call. So ``GET /dashboard`` is a public page
(``strowger.security.scopes.PUBLIC_PAGES``) while ``/dashboard/api/**`` needs
the ``operator`` scope, like the DLQ and saga routes the page's buttons call.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from strowger.bus.port import Bus
from strowger.bus.runtime import ConsumerRunner
from strowger.events.envelope import format_time, utcnow
from strowger.ops.dashboard import data
from strowger.store.db import Database

PAGE_PATH = "/dashboard"
CACHE_SECONDS = 1.0  # many open pages polling every 2 s cost one read per second, not one each


class Dashboard:
    """Reads every section of the dashboard; a snapshot is shared by callers within CACHE_SECONDS."""

    def __init__(
        self,
        database: Database,
        bus: Bus,
        runners: list[ConsumerRunner],
        alerts: data.AlertProvider | None = None,
        *,
        rate_window: float = 10.0,
        outbox_across_components: bool = False,
        component: str = "all",
    ) -> None:
        self.database = database
        self.bus = bus
        self.runners = runners  # the platform's own list: consumers added later are seen
        self.alerts = alerts
        self.rate_window = rate_window
        self.outbox_across_components = outbox_across_components  # operations of a split cluster
        self.component = component
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # concurrent pollers wait for one read instead of starting their own
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            body = await self._read()
            self._cached = (time.monotonic(), body)
            return body

    async def _read(self) -> dict[str, Any]:
        database, runners = self.database, self.runners
        flow, sagas, lag, dlq, outbox = await asyncio.gather(
            data.section("flow", lambda: _flow_json(database, runners, self.rate_window)),
            data.section("sagas", lambda: data.saga_health(database)),
            data.section("lag", lambda: data.consumer_lag(self.bus, runners)),
            data.section("deadLetters", lambda: data.dead_letters(database)),
            data.section("outbox", self._outbox),
        )
        return {
            "generatedAt": format_time(utcnow()),
            "database": database.kind,
            "bus": self.bus.kind,
            "flow": flow,
            "sagas": sagas,
            "lag": lag,
            "deadLetters": dlq,
            "outbox": outbox,
            "alerts": data.active_alerts(self.alerts),
        }

    async def _outbox(self) -> dict[str, Any]:
        return await data.outbox_backlog(
            self.database, across_components=self.outbox_across_components, here=self.component
        )


async def _flow_json(database: Database, runners: list[ConsumerRunner], window: float) -> dict[str, Any]:
    return (await data.discover_flow(database, runners, window=window)).to_json()


def dashboard_router(dashboard: Dashboard) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The dashboard page (no data in it: the script fetches it with the operator's key)."""
        return HTMLResponse(page_html(), headers=_PAGE_HEADERS)

    @router.get(f"{PAGE_PATH}/api/overview")
    async def overview() -> dict[str, Any]:
        """Everything the dashboard shows, in one document: flow map, sagas, lag, dead letters, outbox
        backlog, alerts."""
        return await dashboard.snapshot()

    @router.get(f"{PAGE_PATH}/api/sagas")
    async def sagas(
        compensation_window: float = Query(
            900.0, alias="compensationWindow", gt=0, le=7 * 86400, description="rolling window, seconds"
        ),
    ) -> dict[str, Any]:
        """Saga health: p50/p95/p99 per saga type and order type, in flight per step, stuck, the
        compensation rate over ``compensationWindow`` with its top reasons, open and quarantined sagas."""
        window = timedelta(seconds=compensation_window)
        return await data.saga_health(dashboard.database, compensation_window=window)

    @router.get(f"{PAGE_PATH}/api/flow")
    async def flow(
        window: float = Query(10.0, gt=0, le=3600, description="rate window, seconds"),
        horizon: float = Query(3600.0, gt=0, le=7 * 86400, description="discovery horizon, seconds"),
    ) -> dict[str, Any]:
        """The discovered event-flow map with events/s over ``window``."""
        found = await data.discover_flow(
            dashboard.database, dashboard.runners, window=window, horizon=horizon
        )
        return found.to_json()

    return router


# The page may not be framed (clickjacking of the replay/discard buttons) and its inline code is its own.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def page_html() -> str:
    """dashboard.html with its stylesheets and scripts inlined (read once from the package)."""
    static = files("strowger.ops.dashboard").joinpath("static")

    def read(*parts: str) -> str:
        return static.joinpath(*parts).read_text(encoding="utf-8")

    page = read("dashboard.html")
    inlined = {
        "/*UPLOT_CSS*/": read("vendor", "uplot", "uPlot.min.css"),
        "/*DASHBOARD_CSS*/": read("dashboard.css"),
        "/*UPLOT_JS*/": read("vendor", "uplot", "uPlot.iife.min.js"),
        "/*DASHBOARD_JS*/": read("dashboard.js"),
    }
    for marker, text in inlined.items():
        if "</script" in text.lower() or "</style" in text.lower():
            raise ValueError(f"{marker} cannot be inlined: it closes its own element")
        page = page.replace(marker, text)
    return page
