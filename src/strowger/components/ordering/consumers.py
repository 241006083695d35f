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

from collections.abc import Iterable, Mapping
from typing import Any

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.ordering.service import OrderingService
from strowger.components.ordering.states import ProductOrderState
from strowger.components.ordering.validation import read_catalog, validate_order
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS, SERVICE_EVENTS

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


def fulfilment_consumer(service: OrderingService) -> Consumer:
    """Applies service order outcomes to the product order items (the inventory records the products
    from the ProductOrderStateChangeEvent this emits: ``inventory-products``)."""

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
        order.record_fulfilment(item_ids, outcome, service.clock(), failure_reason(service_order))
        await service.commit(uow.tx, order, causation_id=envelope.event_id)

    return Consumer(
        name="ordering-fulfilment",
        topics=(SERVICE_EVENTS.name,),
        handler=on_service_order,
        event_types=frozenset({"ServiceOrderStateChangeEvent"}),
    )


def failure_reason(service_order: Document) -> str | None:
    """Why a service order failed: its TMF641 ``errorMessage`` (one, or the first of a list)."""
    error = service_order.get("errorMessage")
    if isinstance(error, list):
        error = error[0] if error else None
    if not isinstance(error, Mapping):
        return None
    reason = error.get("reason") or error.get("message")
    return str(reason) if reason else None


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
