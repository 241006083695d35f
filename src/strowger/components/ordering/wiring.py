"""Plugs TMF622 Product Ordering into a :class:`~strowger.bootstrap.Platform`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.ordering.api import ordering_router
from strowger.components.ordering.consumers import fulfilment_consumer, validation_consumer
from strowger.components.ordering.service import OrderingService
from strowger.components.ordering.validation import sample_technical_catalog
from strowger.components.ordering.view import VIEW_TABLES
from strowger.store.eventstore import open_event_store
from strowger.tmf.hubs import HUB_TABLES, CallbackGuard
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform) -> OrderingService:
    """The API, the event store and read model tables, the validation and completion consumers."""
    database = platform.database
    store = open_event_store(database)
    service = OrderingService(database, store, platform.sink("ordering"))
    platform.add_tables(store.tables, VIEW_TABLES, RESOURCE_TABLES, HUB_TABLES)
    guard = CallbackGuard.from_settings(platform.settings.hub_allowed_networks)
    platform.add_router(
        ordering_router(service, database, guard),
        title="TMF622 Product Ordering",
        href=f"{service.base_path}/productOrder",
    )
    platform.add_consumer(validation_consumer(service, sample_technical_catalog()))
    platform.add_consumer(fulfilment_consumer(service))  # the inventory records the products itself
    return service
