"""The inventories' server-side write path: fulfilment handlers record what they built.

Each inventory is a :class:`~strowger.tmf.writer.ResourceWriter` on its API:
``upsert(tx, entity)``, ``upsert_from_event(tx, envelope)``, ``set_state``,
``update``, ``remove`` and ``get``, all inside the caller's transaction. Call
``ensure_tables()`` once at start-up.
"""

from __future__ import annotations

from strowger.components.inventory.api import (
    PRODUCT_INVENTORY_API,
    RESOURCE_INVENTORY_API,
    SERVICE_INVENTORY_API,
)
from strowger.store.db import Database
from strowger.tmf.resources import EventSink, TmfApi
from strowger.tmf.writer import ResourceWriter


class Inventory(ResourceWriter):
    """Writes the one resource of an inventory API inside the caller's transaction."""

    def __init__(self, api: TmfApi, database: Database, event_sink: EventSink) -> None:
        (resource,) = api.resources
        super().__init__(api, resource, database, event_sink)


class ProductInventory(Inventory):
    """TMF637 products (``status``: ProductStatusType), events on ``bss.inventory.events``."""

    def __init__(self, database: Database, event_sink: EventSink) -> None:
        super().__init__(PRODUCT_INVENTORY_API, database, event_sink)


class ServiceInventory(Inventory):
    """TMF638 services (``state``: ServiceStateType), events on ``oss.service.events``."""

    def __init__(self, database: Database, event_sink: EventSink) -> None:
        super().__init__(SERVICE_INVENTORY_API, database, event_sink)


class ResourceInventory(Inventory):
    """TMF639 resources (``resourceStatus``: ResourceStatusType), events on ``oss.resource.events``."""

    def __init__(self, database: Database, event_sink: EventSink) -> None:
        super().__init__(RESOURCE_INVENTORY_API, database, event_sink)
