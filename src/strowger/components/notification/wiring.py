"""Plugs notifications into a :class:`~strowger.bootstrap.Platform`: table, consumer, sender task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from strowger.components.notification.channels import EMAIL, PUSH, SMS, Channel, JsonLinesChannel
from strowger.components.notification.consumer import notification_consumer
from strowger.components.notification.sender import NotificationSender
from strowger.components.notification.store import NOTIFICATION_TABLES, NotificationStore

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

DEFAULT_DIRECTORY = Path("var/notifications")


def default_channels(directory: Path = DEFAULT_DIRECTORY) -> dict[str, Channel]:
    """SMS, email and push written as JSON lines under ``directory`` until real gateways are plugged in."""
    sink = JsonLinesChannel(directory)
    return {SMS: sink, EMAIL: sink, PUSH: sink}


def install(
    platform: Platform, channels: Mapping[str, Channel] | None = None, *, default_channel: str = EMAIL
) -> NotificationSender:
    """The ``notification`` consumer group and the sender task, on ``channels`` (default: JSON lines)."""
    store = NotificationStore(platform.database)
    sender = NotificationSender(store, channels or default_channels())
    platform.add_tables(NOTIFICATION_TABLES)
    platform.add_consumer(
        notification_consumer(store, default_channel=default_channel, on_recorded=sender.wake)
    )
    platform.add_task("notification-sender", sender.run)
    return sender
