"""The ordering component's event handlers: business validation and the completion path.

Both run on the consumer runtime (inbox dedup, retries, dead letters) and
decide inside the handler's transaction, so the order's new events, its TMF
notifications and the inbox row commit together. A handler that finds the
order already past the point it acts on does nothing: redeliveries and late
events are harmless.

Fulfilment contract (see docs/ordering.md): service order management reports on
``oss.service.events`` with ``ServiceOrderStateChangeEvent`` whose
``event.serviceOrder`` carries ``externalReference`` entries
``{"externalReferenceType": "ProductOrder", "name": <product order id>}`` and,
optionally, ``{"externalReferenceType": "ProductOrderItem", "name": <item id>}``
(none: the service order fulfils every item). Its final ``state`` decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.inventory.service import ProductInventory
from strowger.components.ordering.aggregate import ProductOrder
from strowger.components.ordering.service import OrderingService
from strowger.components.ordering.states import ProductOrderState
from strowger.components.ordering.validation import read_catalog, validate_order
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS, SERVICE_EVENTS
from strowger.store.db import Transaction

log = logging.getLogger("strowger.ordering")

Document = Mapping[str, Any]

# Final service order state -> the state of the product order items it fulfils. A partial service
# order did not deliver what the item asked for: the item failed (the order may still be partial).
OUTCOMES = {"completed": "completed", "failed": "failed", "partial": "failed", "cancelled": "cancelled"}


def validation_consumer(
    service: OrderingService, technical_catalog: Mapping[str, Iterable[Document]] | None = None
) -> Consumer:
    """Validates each new order against the catalog: ``inProgress`` (fulfilment starts) or ``rejected``."""

    async def validate(envelope: Envelope, uow: UnitOfWork) -> None:
        order = await service.load(envelope.entity_key, tx=uow.tx)
        if order.state is not ProductOrderState.ACKNOWLEDGED:
            return  # already decided, or cancelled before validation ran
        problems = validate_order(order.to_tmf(), await read_catalog(uow.tx, technical_catalog))
        now = service.clock()
        if problems:
            order.reject("; ".join(problems), now)
        else:
            order.start_fulfilment(now)
        await service.commit(uow.tx, order, causation_id=envelope.event_id)

    return Consumer(
        name="ordering-validation",
        topics=(ORDERING_EVENTS.name,),
        handler=validate,
        event_types=frozenset({"ProductOrderCreateEvent"}),
    )


def fulfilment_consumer(service: OrderingService, inventory: ProductInventory | None = None) -> Consumer:
    """Applies service order outcomes to the product order items; on completion records the products."""

    async def on_service_order(envelope: Envelope, uow: UnitOfWork) -> None:
        service_order = envelope.payload.get("serviceOrder")
        if not isinstance(service_order, Mapping):
            return
        outcome = OUTCOMES.get(str(service_order.get("state")))
        order_id, item_ids = product_order_reference(service_order)
        if outcome is None or order_id is None:
            return  # not final yet, or not fulfilling a product order
        order = await service.load(order_id, tx=uow.tx)
        if order.is_final:
            return
        order.record_fulfilment(item_ids, outcome, service.clock())
        await service.commit(uow.tx, order, causation_id=envelope.event_id)
        if inventory is not None and order.state in (ProductOrderState.COMPLETED, ProductOrderState.PARTIAL):
            await record_products(uow.tx, inventory, order)

    return Consumer(
        name="ordering-fulfilment",
        topics=(SERVICE_EVENTS.name,),
        handler=on_service_order,
        event_types=frozenset({"ServiceOrderStateChangeEvent"}),
    )


def product_order_reference(service_order: Document) -> tuple[str | None, list[str]]:
    """(product order id, item ids) a service order says it fulfils (see the module docstring)."""
    order_id: str | None = None
    items: list[str] = []
    for reference in service_order.get("externalReference") or ():
        if not isinstance(reference, Mapping):
            continue
        kind = str(reference.get("externalReferenceType", "")).lower()
        name = reference.get("name")
        if kind == "productorder" and name:
            order_id = str(name)
        elif kind == "productorderitem" and name:
            items.append(str(name))
    return order_id, items


async def record_products(tx: Transaction, inventory: ProductInventory, order: ProductOrder) -> None:
    """TMF637: a completed ``add`` item creates an active product, ``modify`` updates it, ``delete``
    terminates it. The product id is ``item.product.id`` if given, else ``<order id>-<item id>``."""
    await record_ordered_products(tx, inventory, order.to_tmf())


async def record_ordered_products(tx: Transaction, inventory: ProductInventory, document: Document) -> None:
    """:func:`record_products` from the order's TMF622 representation (as its notifications carry it)."""
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
