"""The topic catalogue: where each kind of message travels.

Domain topics carry facts to many consumers; command topics carry imperatives to
exactly one consumer group (a queue on RabbitMQ). Every message is keyed by its
entity id so all events of one order stay in order on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from strowger.events.envelope import Category


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    category: Category
    partitions: int = 6
    replayable: bool = True  # RabbitMQ: backed by a stream queue so consumers can rewind


CATALOG_EVENTS = Topic("bss.catalog.events", Category.DOMAIN)
ORDERING_EVENTS = Topic("bss.ordering.events", Category.DOMAIN)
BILLING_EVENTS = Topic("bss.billing.events", Category.DOMAIN)
INVENTORY_EVENTS = Topic("bss.inventory.events", Category.DOMAIN)
SERVICE_EVENTS = Topic("oss.service.events", Category.DOMAIN)
RESOURCE_EVENTS = Topic("oss.resource.events", Category.DOMAIN)
SERVICE_COMMANDS = Topic("oss.service.commands", Category.COMMAND, replayable=False)
RESOURCE_COMMANDS = Topic("oss.resource.commands", Category.COMMAND, replayable=False)
ACTIVATION_COMMANDS = Topic("oss.activation.commands", Category.COMMAND, replayable=False)
INVENTORY_COMMANDS = Topic("oss.inventory.commands", Category.COMMAND, replayable=False)
NOTIFICATION_EVENTS = Topic("bss.notification.events", Category.NOTIFICATION)
SYSTEM_EVENTS = Topic("ops.system.events", Category.SYSTEM)
ALERT_EVENTS = Topic("ops.alerts", Category.SYSTEM)

ALL_TOPICS: tuple[Topic, ...] = (
    CATALOG_EVENTS,
    ORDERING_EVENTS,
    BILLING_EVENTS,
    INVENTORY_EVENTS,
    SERVICE_EVENTS,
    RESOURCE_EVENTS,
    SERVICE_COMMANDS,
    RESOURCE_COMMANDS,
    ACTIVATION_COMMANDS,
    INVENTORY_COMMANDS,
    NOTIFICATION_EVENTS,
    SYSTEM_EVENTS,
    ALERT_EVENTS,
)

_BY_NAME = {topic.name: topic for topic in ALL_TOPICS}


def topic_named(name: str) -> Topic:
    """The catalogued topic, or a domain topic with defaults for one not catalogued (tests, extensions)."""
    return _BY_NAME.get(name) or Topic(name, Category.DOMAIN)
