"""``GET /analytics/orders``: the order analytics summary as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from strowger.components.analytics.view import OrderAnalytics


def analytics_router(analytics: OrderAnalytics) -> APIRouter:
    router = APIRouter(prefix="/analytics", tags=["analytics"])

    @router.get("/orders")
    async def orders() -> dict[str, Any]:
        """Orders by state, items per offering and state with revenue, acknowledged→completed p50/p95."""
        return (await analytics.summary()).to_json()

    return router
