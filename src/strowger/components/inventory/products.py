"""The product inventory fed by the ordering events, for a split cluster (``inventory-products``).

In one schema (``strowger run all``) the ordering component records the products of a
completed order in the transaction that completes it (``ordering-fulfilment``). When each
component owns its schema (docs/operations.md, "Database layout") ordering may not write the
inventory's tables: the inventory component records them itself, from the
``ProductOrderStateChangeEvent`` that reports the order ``completed`` or ``partial`` (its
payload is the whole order after the change). The inbox makes a redelivery harmless.
"""

from __future__ import annotations

from collections.abc import Mapping

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.inventory.service import ProductInventory
from strowger.components.ordering.consumers import record_ordered_products
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS

CONSUMER_NAME = "inventory-products"
RECORDED_STATES = frozenset({"completed", "partial"})  # as ordering-fulfilment records them


def product_inventory_consumer(inventory: ProductInventory) -> Consumer:
    """Records the products of each order that reaches ``completed`` or ``partial``."""

    async def on_order(envelope: Envelope, uow: UnitOfWork) -> None:
        order = envelope.payload.get("productOrder")
        if not isinstance(order, Mapping) or order.get("state") not in RECORDED_STATES:
            return
        if not order.get("id") or not order.get("orderDate"):
            return  # not an order this component can record (the schema requires both)
        await record_ordered_products(uow.tx, inventory, order)

    return Consumer(
        name=CONSUMER_NAME,
        topics=(ORDERING_EVENTS.name,),
        handler=on_order,
        event_types=frozenset({"ProductOrderStateChangeEvent"}),
    )
