"""Plugs the inventory command handler (RecordInventory/RemoveInventory) into a Platform.

The inventory APIs themselves are wired by the composition root (``_tmf_apis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.inventory.commands import (
    INVENTORY_COMMAND_TABLES,
    InventoryCommands,
    inventory_command_consumer,
)
from strowger.components.inventory.service import ResourceInventory, ServiceInventory
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform) -> InventoryCommands:
    """The consumer of ``oss.inventory.commands``, writing TMF638/TMF639 entities in its transaction."""
    sink = platform.sink("inventory")
    commands = InventoryCommands(
        ServiceInventory(platform.database, sink), ResourceInventory(platform.database, sink)
    )
    platform.add_tables(RESOURCE_TABLES, INVENTORY_COMMAND_TABLES)
    platform.add_consumer(inventory_command_consumer(commands))
    if platform.settings.database_schemas:  # a split cluster: ordering may not write our tables
        from strowger.components.inventory.products import product_inventory_consumer
        from strowger.components.inventory.service import ProductInventory

        platform.add_consumer(product_inventory_consumer(ProductInventory(platform.database, sink)))
    return commands
