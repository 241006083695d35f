"""The analytics consumer: one more group on ``bss.ordering.events``; no publisher knows it exists."""

from __future__ import annotations

from collections.abc import Mapping

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.analytics.view import apply_order
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS

CONSUMER_NAME = "analytics"
EVENT_TYPES = frozenset(
    {"ProductOrderCreateEvent", "ProductOrderStateChangeEvent", "ProductOrderAttributeValueChangeEvent"}
)


def analytics_consumer(name: str = CONSUMER_NAME) -> Consumer:
    async def handle(envelope: Envelope, uow: UnitOfWork) -> None:
        order = envelope.payload.get("productOrder")
        if isinstance(order, Mapping) and order.get("id"):
            await apply_order(uow.tx, order, envelope.event_type, envelope.event_time)

    return Consumer(name=name, topics=(ORDERING_EVENTS.name,), handler=handle, event_types=EVENT_TYPES)
