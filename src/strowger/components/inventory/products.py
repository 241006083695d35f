"""The product inventory fed by the ordering events (``inventory-products``), in every deployment.

The inventory component alone writes TMF637 products: from the ``ProductOrderStateChangeEvent``
that reports an order ``completed`` or ``partial`` (its payload is the whole order after the
change), in its own transaction and schema, whether it runs in one process with ordering
(``strowger run all``) or in its own (a split cluster, docs/operations.md "Database layout").
The inventory is therefore a moment behind the order (one hop through the outbox and the bus).
The inbox makes a redelivery harmless, and the upserts are idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.inventory.service import ProductInventory
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS
from strowger.store.db import Transaction

log = logging.getLogger("strowger.inventory")

CONSUMER_NAME = "inventory-products"
RECORDED_STATES = frozenset({"completed", "partial"})  # the states in which an order delivered items

Document = Mapping[str, Any]


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


async def record_ordered_products(tx: Transaction, inventory: ProductInventory, document: Document) -> None:
    """TMF637 from a completed order (TMF622, as its notifications carry it): a completed ``add`` item
    creates an active product, ``modify`` updates it, ``delete`` terminates it. The product id is
    ``item.product.id`` if given, else ``<order id>-<item id>``."""
    order_id = str(document["id"])
    now = str(document.get("completionDate") or document["orderDate"])
    for item in document.get("productOrderItem", ()):
        if item.get("state") != "completed":
            continue
        product = dict(item.get("product") or {})
        product_id = str(product.get("id") or f"{order_id}-{item['id']}")
        action = item.get("action")
        if action == "delete":
            if await inventory.get(tx, product_id) is None:
                log.warning(
                    "order %s deletes product %s, which the inventory does not have", order_id, product_id
                )
                continue
            await inventory.update(tx, product_id, {"status": "terminated", "terminationDate": now})
        elif action in ("add", "modify"):
            await inventory.upsert(tx, _product(product_id, product, item, document, now))


def _product(
    product_id: str, product: dict[str, Any], item: Document, order: Document, now: str
) -> dict[str, Any]:
    entity: dict[str, Any] = {key: value for key, value in product.items() if key not in ("href",)}
    entity.update(
        {
            "id": product_id,
            "status": "active",
            "productOffering": item.get("productOffering"),
            "billingAccount": item.get("billingAccount") or order.get("billingAccount"),
            "relatedParty": order.get("relatedParty"),
            "productOrderItem": [
                {
                    "orderItemId": item["id"],
                    "orderItemAction": item.get("action"),
                    "productOrderId": order["id"],
                    "productOrderHref": order["href"],
                    "@referredType": "ProductOrderItem",
                }
            ],
        }
    )
    if item.get("action") == "add":
        entity.setdefault("startDate", now)
        entity.setdefault("orderDate", order.get("orderDate"))
    return {key: value for key, value in entity.items() if value is not None}
