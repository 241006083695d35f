"""The notification consumer: it subscribes to ordering and billing events; nobody calls it.

For each event with a template it records one pending row per recipient in
the runtime's transaction (with the inbox row); sending is the sender's job,
after commit (``store.py`` says why).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.notification.channels import EMAIL, OutboundMessage
from strowger.components.notification.store import NotificationStore, message_id
from strowger.components.notification.templates import TEMPLATES, MessageTemplate, recipients, render
from strowger.events.envelope import Envelope
from strowger.events.topics import BILLING_EVENTS, ORDERING_EVENTS

CONSUMER_NAME = "notification"


def notification_consumer(
    store: NotificationStore,
    *,
    default_channel: str = EMAIL,
    templates: Mapping[tuple[str, str], MessageTemplate] = TEMPLATES,
    on_recorded: Callable[[], None] | None = None,
    name: str = CONSUMER_NAME,
) -> Consumer:
    """Records the notifications each templated event calls for; ``on_recorded`` runs after commit."""

    async def handle(envelope: Envelope, uow: UnitOfWork) -> None:
        rendered = render(envelope.event_type, envelope.payload, templates)
        if rendered is None:
            return
        recorded = False
        for recipient in recipients(envelope.payload, default_channel):
            message = OutboundMessage(
                id=message_id(envelope.event_id, rendered.template, recipient.channel, recipient.address),
                channel=recipient.channel,
                recipient=recipient.address,
                subject=rendered.subject,
                body=rendered.body,
                template=rendered.template,
                event_id=envelope.event_id,
                entity_key=envelope.entity_key,
            )
            recorded = await store.add(uow.tx, message) or recorded
        if recorded and on_recorded is not None:
            uow.tx.on_commit(on_recorded)

    return Consumer(
        name=name,
        topics=(ORDERING_EVENTS.name, BILLING_EVENTS.name),
        handler=handle,
        event_types=frozenset(event_type for event_type, _ in templates),
    )
