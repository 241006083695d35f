"""What a notification says and to whom, pure: templates per event and the customer's contact medium.

Templates use :class:`string.Template` (``$name`` placeholders only: no
expressions, no attribute access, nothing an event's content can execute).
Values are flattened to single-line text and cut to a bounded length before
substitution, so a hostile note cannot inject extra lines into an SMS or a
mail header. A template is chosen by (event type, state); events without one
notify nobody.

The recipient comes from the order's ``relatedParty`` with role ``customer``:
its TMF629-style ``contactMedium`` list (the ``preferred`` one first) gives
the channel — ``email`` (``characteristic.emailAddress``), ``mobile``/``sms``/
``phone`` (``characteristic.phoneNumber``) or ``push``
(``characteristic.deviceToken``). Without one, the default channel is used
with the party id as recipient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from strowger.components.notification.channels import EMAIL, PUSH, SMS

Document = Mapping[str, Any]
MAX_VALUE = 200


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    name: str
    subject: Template
    body: Template


@dataclass(frozen=True, slots=True)
class Rendered:
    template: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class Recipient:
    channel: str
    address: str


def _template(name: str, subject: str, body: str) -> MessageTemplate:
    return MessageTemplate(name, Template(subject), Template(body))


ORDER_TEMPLATES: Mapping[tuple[str, str], MessageTemplate] = {
    ("ProductOrderCreateEvent", "acknowledged"): _template(
        "order-acknowledged",
        "We received your order $order_id",
        "Hello $customer, we received your order $order_id ($offerings)."
        " We will let you know when it is ready.",
    ),
    ("ProductOrderStateChangeEvent", "completed"): _template(
        "order-completed",
        "Your order $order_id is complete",
        "Hello $customer, your order $order_id ($offerings) is complete.",
    ),
    ("ProductOrderStateChangeEvent", "partial"): _template(
        "order-partial",
        "Your order $order_id is partly complete",
        "Hello $customer, part of your order $order_id ($offerings) could not be delivered: $reason",
    ),
    ("ProductOrderStateChangeEvent", "rejected"): _template(
        "order-rejected",
        "We could not accept your order $order_id",
        "Hello $customer, we could not accept your order $order_id: $reason",
    ),
    ("ProductOrderStateChangeEvent", "failed"): _template(
        "order-failed",
        "Your order $order_id failed",
        "Hello $customer, we could not complete your order $order_id: $reason",
    ),
    ("ProductOrderStateChangeEvent", "cancelled"): _template(
        "order-cancelled",
        "Your order $order_id is cancelled",
        "Hello $customer, your order $order_id is cancelled. Anything charged has been credited.",
    ),
}

BILL_TEMPLATES: Mapping[tuple[str, str], MessageTemplate] = {
    ("CustomerBillStateChangeEvent", "sent"): _template(
        "bill-sent",
        "Your bill $bill_no",
        "Hello, your bill $bill_no of $amount is available.",
    ),
}

TEMPLATES: Mapping[tuple[str, str], MessageTemplate] = {**ORDER_TEMPLATES, **BILL_TEMPLATES}


def render(
    event_type: str, payload: Document, templates: Mapping[tuple[str, str], MessageTemplate] = TEMPLATES
) -> Rendered | None:
    """The notification ``event_type`` with ``payload`` calls for, or None."""
    entity = _entity(payload)
    if entity is None:
        return None
    state = str(entity.get("state") or "")
    template = templates.get((event_type, state))
    if template is None:
        return None
    values = {name: _clean(value) for name, value in _values(entity).items()}
    return Rendered(
        template.name, template.subject.safe_substitute(values), template.body.safe_substitute(values)
    )


def recipients(payload: Document, default_channel: str) -> list[Recipient]:
    """Who to tell: the customer's preferred contact medium, else ``default_channel`` with the party id."""
    entity = _entity(payload) or {}
    customer = _customer(entity.get("relatedParty") or ())
    if customer is None:
        account = (entity.get("billingAccount") or {}).get("id")
        return [Recipient(default_channel, str(account))] if account else []
    for medium in sorted(_media(customer), key=lambda medium: not medium.get("preferred")):
        recipient = _recipient(medium)
        if recipient is not None:
            return [recipient]
    return [Recipient(default_channel, str(customer["id"]))]


def _entity(payload: Document) -> Document | None:
    for key in ("productOrder", "customerBill"):
        entity = payload.get(key)
        if isinstance(entity, Mapping):
            return entity
    return None


def _values(entity: Document) -> dict[str, Any]:
    customer = _customer(entity.get("relatedParty") or ()) or {}
    items = entity.get("productOrderItem") or ()
    offerings = ", ".join(
        str(
            (item.get("productOffering") or {}).get("name")
            or (item.get("productOffering") or {}).get("id")
            or ""
        )
        for item in items
        if isinstance(item, Mapping)
    )
    amount = entity.get("amountDue") or {}
    return {
        "order_id": entity.get("id", ""),
        "customer": customer.get("name") or customer.get("id") or "customer",
        "offerings": offerings,
        "reason": _reason(entity),
        "bill_no": entity.get("billNo") or entity.get("id", ""),
        "amount": f"{amount.get('value', '')} {amount.get('unit', '')}".strip(),
    }


def _reason(entity: Document) -> str:
    """Why an order ended as it did: the latest note (ordering records rejections there)."""
    notes = [note for note in entity.get("note") or () if isinstance(note, Mapping) and note.get("text")]
    return str(notes[-1]["text"]) if notes else "no reason given"


def _clean(value: Any) -> str:
    text = " ".join(str(value).split())  # one line: no header or SMS injection through newlines
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _customer(parties: Sequence[Any]) -> Document | None:
    for party in parties:
        if (
            isinstance(party, Mapping)
            and str(party.get("role", "")).lower() == "customer"
            and party.get("id")
        ):
            return party
    return None


def _media(party: Document) -> list[Document]:
    return [medium for medium in party.get("contactMedium") or () if isinstance(medium, Mapping)]


MEDIUM_CHANNELS = {
    "email": (EMAIL, "emailAddress"),
    "mobile": (SMS, "phoneNumber"),
    "sms": (SMS, "phoneNumber"),
    "phone": (SMS, "phoneNumber"),
    "push": (PUSH, "deviceToken"),
}


def _recipient(medium: Document) -> Recipient | None:
    known = MEDIUM_CHANNELS.get(str(medium.get("mediumType", "")).lower())
    if known is None:
        return None
    channel, field = known
    address = (medium.get("characteristic") or {}).get(field)
    return Recipient(channel, _clean(address)) if address else None
