"""The live operations dashboard (docs/dashboard.md): ``/dashboard`` and ``/dashboard/api/*``.

``install(platform)`` serves it. The firing alerts come from ``alerts`` if
given, else from ``platform.alerts`` (the AlertMonitor) whenever it is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from strowger.components.database import operations_across_components
from strowger.ops.dashboard.api import PAGE_PATH, Dashboard, dashboard_router
from strowger.ops.dashboard.data import AlertProvider, FlowMap, discover_flow, saga_health
from strowger.saga.store import SAGA_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

__all__ = [
    "PAGE_PATH",
    "AlertProvider",
    "Dashboard",
    "FlowMap",
    "dashboard_router",
    "discover_flow",
    "install",
    "saga_health",
]


def install(platform: Platform, alerts: AlertProvider | None = None) -> Dashboard:
    """Serve the dashboard for ``platform`` and link it from the index page."""
    # The saga health section reads the saga tables even in a process that runs no saga.
    platform.add_tables(SAGA_TABLES)
    provider = alerts if alerts is not None else _PlatformAlerts(platform)
    dashboard = Dashboard(
        platform.database,
        platform.bus,
        platform.runners,
        provider,
        outbox_across_components=operations_across_components(platform.settings),
        component=platform.settings.component,
    )
    platform.add_router(dashboard_router(dashboard), title="Dashboard", href=PAGE_PATH)
    return dashboard


class _PlatformAlerts:
    """The platform's alert monitor, looked up at read time (it may be installed after the dashboard)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def active_alerts(self) -> Sequence[Any]:
        monitor = getattr(self.platform, "alerts", None)
        return [] if monitor is None else list(monitor.active_alerts())
