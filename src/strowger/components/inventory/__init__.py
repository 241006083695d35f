"""TMF637 Product, TMF638 Service and TMF639 Resource Inventory: the APIs and the server-side write path."""

from strowger.components.inventory.api import (
    PRODUCT_INVENTORY_API,
    PRODUCT_STATUS,
    RESOURCE_INVENTORY_API,
    RESOURCE_STATUS,
    SERVICE_INVENTORY_API,
    SERVICE_STATE,
    product_inventory_router,
    resource_inventory_router,
    service_inventory_router,
)
from strowger.components.inventory.service import (
    Inventory,
    ProductInventory,
    ResourceInventory,
    ServiceInventory,
)

__all__ = [
    "PRODUCT_INVENTORY_API",
    "PRODUCT_STATUS",
    "RESOURCE_INVENTORY_API",
    "RESOURCE_STATUS",
    "SERVICE_INVENTORY_API",
    "SERVICE_STATE",
    "Inventory",
    "ProductInventory",
    "ResourceInventory",
    "ServiceInventory",
    "product_inventory_router",
    "resource_inventory_router",
    "service_inventory_router",
]
