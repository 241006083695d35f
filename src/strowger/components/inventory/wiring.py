"""Plugs the inventory's consumers into a Platform: RecordInventory/RemoveInventory, and the
product inventory fed by the ordering events (``inventory-products``).

The inventory APIs themselves are wired by the composition root (``_tmf_apis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.inventory.commands import (
    INVENTORY_COMMAND_TABLES,
    InventoryCommands,
    inventory_command_consumer,
)
from strowger.components.inventory.products import product_inventory_consumer
from strowger.components.inventory.service import ProductInventory, ResourceInventory, ServiceInventory
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform) -> InventoryCommands:
    """``oss.inventory.commands`` (TMF638/TMF639) and the TMF637 products of completed orders."""
    sink = platform.sink("inventory")
    commands = InventoryCommands(
        ServiceInventory(platform.database, sink), ResourceInventory(platform.database, sink)
    )
    platform.add_tables(RESOURCE_TABLES, INVENTORY_COMMAND_TABLES)
    platform.add_consumer(inventory_command_consumer(commands))
    platform.add_consumer(product_inventory_consumer(ProductInventory(platform.database, sink)))
    return commands
