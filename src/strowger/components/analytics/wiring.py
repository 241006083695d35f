"""Plugs order analytics into a :class:`~strowger.bootstrap.Platform`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.analytics.api import analytics_router
from strowger.components.analytics.consumer import analytics_consumer
from strowger.components.analytics.view import ANALYTICS_TABLES, OrderAnalytics

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform) -> OrderAnalytics:
    """The tables, the ``analytics`` consumer group and ``GET /analytics/orders``."""
    analytics = OrderAnalytics(platform.database)
    platform.add_tables(ANALYTICS_TABLES)
    platform.add_consumer(analytics_consumer())
    platform.add_router(analytics_router(analytics), title="Order analytics", href="/analytics/orders")
    return analytics
