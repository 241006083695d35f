"""Billing by choreography: it listens to ordering and inventory; nobody calls it.

* ``ProductOrderStateChangeEvent`` (``bss.ordering.events``) with state
  ``completed`` or ``partial``: charge the completed ``add`` items from the
  catalog's prices; ``cancelled`` or ``failed``: credit whatever was charged.
* ``ProductStateChangeEvent`` (``bss.inventory.events``) with ``status``
  ``terminated``: credit that product's recurring fees (the activation fee was
  earned when it was delivered).

All effects happen in the runtime's transaction, with the inbox row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.billing.charging import BillingLedger, read_price_book
from strowger.events.envelope import Envelope
from strowger.events.topics import INVENTORY_EVENTS, ORDERING_EVENTS

CONSUMER_NAME = "billing"
CHARGED_STATES = frozenset({"completed", "partial"})
CREDITED_STATES = frozenset({"cancelled", "failed"})
EVENT_TYPES = frozenset({"ProductOrderStateChangeEvent", "ProductStateChangeEvent"})


def billing_consumer(ledger: BillingLedger, name: str = CONSUMER_NAME) -> Consumer:
    """The billing consumer group: charges on completion, credits on cancellation and termination."""

    async def handle(envelope: Envelope, uow: UnitOfWork) -> None:
        order = envelope.payload.get("productOrder")
        if isinstance(order, Mapping):
            await on_order(ledger, uow, order)
            return
        product = envelope.payload.get("product")
        if isinstance(product, Mapping):
            await on_product(ledger, uow, product)

    return Consumer(
        name=name,
        topics=(ORDERING_EVENTS.name, INVENTORY_EVENTS.name),
        handler=handle,
        event_types=EVENT_TYPES,
    )


async def on_order(ledger: BillingLedger, uow: UnitOfWork, order: Mapping[str, Any]) -> None:
    state = order.get("state")
    if state in CHARGED_STATES:
        await ledger.charge_order(uow.tx, order, await read_price_book(uow.tx))
    elif state in CREDITED_STATES:
        await ledger.credit_order(uow.tx, str(order["id"]), f"productOrder {order['id']} {state}")


async def on_product(ledger: BillingLedger, uow: UnitOfWork, product: Mapping[str, Any]) -> None:
    if product.get("status") == "terminated":
        product_id = str(product["id"])
        await ledger.credit_product(
            uow.tx, product_id, f"product {product_id} terminated", recurring_only=True
        )
