"""From the ProductOrder's domain events to the TMF622 notifications the outbox publishes.

Each domain event becomes one notification on ``bss.ordering.events`` whose
payload is the full resource right after that event (``{"productOrder": ...}``
or ``{"cancelProductOrder": ...}``), keyed by the order id so every
notification of one order stays in order on one partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from strowger.components.ordering.aggregate import (
    CancellationRequested,
    CancelTaskStateChanged,
    Change,
    ItemStatesChanged,
    OrderAccepted,
    OrderAttributesChanged,
    OrderDeleted,
    OrderStateChanged,
)
from strowger.events.envelope import Envelope
from strowger.events.topics import ORDERING_EVENTS

TOPIC = ORDERING_EVENTS.name
PRODUCER = "ordering"
DOMAIN = "productOrderingManagement"


def notification(change: Change, *, correlation_id: str, causation_id: str, now: datetime) -> Envelope:
    """The TMF notification for one recorded change."""
    order_id = str(change.order["id"])
    event_type, payload, field_path = _describe(change)
    return Envelope(
        event_type=event_type,
        payload=payload,
        entity_key=order_id,
        event_time=now,
        correlation_id=correlation_id,
        causation_id=causation_id,
        producer=PRODUCER,
        domain=DOMAIN,
        title=event_type,
        extra={"fieldPath": field_path} if field_path else {},
    )


def notifications(
    changes: Iterable[Change], *, correlation_id: str, causation_id: str, now: datetime
) -> list[Envelope]:
    return [
        notification(change, correlation_id=correlation_id, causation_id=causation_id, now=now)
        for change in changes
    ]


def _describe(change: Change) -> tuple[str, dict[str, Any], str]:
    """(event type, payload, fieldPath) of a change."""
    order = {"productOrder": change.order}
    match change.event:
        case OrderAccepted():
            return "ProductOrderCreateEvent", order, ""
        case OrderAttributesChanged(fields=fields):
            return "ProductOrderAttributeValueChangeEvent", order, ",".join(fields)
        case OrderStateChanged():
            return "ProductOrderStateChangeEvent", order, ""
        case ItemStatesChanged():
            return "ProductOrderAttributeValueChangeEvent", order, "productOrderItem.state"
        case CancellationRequested():
            return "CancelProductOrderCreateEvent", {"cancelProductOrder": change.task}, ""
        case CancelTaskStateChanged():
            return "CancelProductOrderStateChangeEvent", {"cancelProductOrder": change.task}, ""
        case OrderDeleted():
            return "ProductOrderDeleteEvent", order, ""
    raise TypeError(f"no TMF notification for {type(change.event).__name__}")
