"""Notifications through the real consumer runtime on the embedded bus (SQLite), then the sender."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import ConsumerRunner
from strowger.components.notification.channels import (
    EMAIL,
    SMS,
    JsonLinesChannel,
    OutboundMessage,
    WebhookChannel,
)
from strowger.components.notification.consumer import notification_consumer
from strowger.components.notification.sender import NotificationSender
from strowger.components.notification.store import NOTIFICATION_TABLES, NotificationStore, Status
from strowger.events.envelope import Envelope, encode
from strowger.events.topics import ALL_TOPICS, ORDERING_EVENTS
from strowger.store.db import Database
from strowger.tmf.delivery import WebhookSender
from strowger.tmf.hubs import CallbackGuard
from tests.contract.runtime_contract import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(sqlite_db: Database) -> AsyncIterator[EmbeddedBus]:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await bus.ensure_topics(ALL_TOPICS)
    yield bus
    await bus.stop()


@pytest.fixture
async def store(sqlite_db: Database) -> NotificationStore:
    await sqlite_db.create_tables(NOTIFICATION_TABLES)
    return NotificationStore(sqlite_db)


@pytest.fixture
async def runner(
    bus: EmbeddedBus, sqlite_db: Database, store: NotificationStore
) -> AsyncIterator[ConsumerRunner]:
    runner = ConsumerRunner(notification_consumer(store), bus, sqlite_db, fetch_timeout=0.2)
    task = asyncio.create_task(runner.run())
    await runner.started.wait()
    yield runner
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def order_event(order_id: str, event_type: str, state: str, **extra: Any) -> Envelope:
    party: dict[str, Any] = {"id": "CUST-1", "name": "Ada", "role": "customer"}
    party["contactMedium"] = [{"mediumType": "mobile", "characteristic": {"phoneNumber": "+33600000000"}}]
    order = {"id": order_id, "state": state, "relatedParty": [party], **extra}
    return Envelope(event_type=event_type, payload={"productOrder": order}, entity_key=order_id)


async def handled(runner: ConsumerRunner, count: int) -> None:
    async def done() -> bool:
        return runner.stats.applied + runner.stats.duplicates + runner.stats.filtered >= count

    await wait_until(done, f"{count} events handled")


async def test_completed_and_rejected_orders_are_recorded_then_sent_once(
    bus: EmbeddedBus, runner: ConsumerRunner, store: NotificationStore, tmp_path: Path
) -> None:
    completed = order_event("ORD-1", "ProductOrderStateChangeEvent", "completed")
    rejected = order_event(
        "ORD-2", "ProductOrderStateChangeEvent", "rejected", note=[{"text": "no such offer"}]
    )
    unrelated = order_event("ORD-1", "ProductOrderStateChangeEvent", "inProgress")
    messages = [
        encode(envelope, ORDERING_EVENTS.name) for envelope in (unrelated, completed, completed, rejected)
    ]
    await bus.publish(messages)
    await handled(runner, 4)

    (row,) = await store.of_entity("ORD-1")
    assert (row.message.template, row.message.channel, row.status) == ("order-completed", SMS, Status.PENDING)
    assert row.message.recipient == "+33600000000"

    sink = JsonLinesChannel(tmp_path / "notifications")
    sender = NotificationSender(store, {SMS: sink, EMAIL: sink})
    assert await sender.run_once() == 2
    assert await sender.run_once() == 0  # nothing is sent twice
    sent = sink.read(SMS)
    assert sorted(message["template"] for message in sent) == ["order-completed", "order-rejected"]
    assert any(message["body"].endswith("no such offer") for message in sent)
    assert await store.counts() == {"sent": 2}


async def test_a_failing_webhook_channel_retries_then_marks_the_notification_failed(
    sqlite_db: Database, store: NotificationStore
) -> None:
    calls: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    guard = CallbackGuard.from_settings(["127.0.0.0/8"])
    webhook = WebhookChannel(
        "http://127.0.0.1:9/notify",
        guard,
        sender=WebhookSender(guard, transport=httpx.MockTransport(unavailable)),
    )
    sender = NotificationSender(store, {EMAIL: webhook}, backoff=(0.0, 0.0))
    async with sqlite_db.transaction() as tx:
        message = _message("ORD-9")
        assert await store.add(tx, message)

    attempts = 0
    while (await store.of_entity("ORD-9"))[0].status is Status.PENDING and attempts < 5:
        attempts += await sender.run_once()
    await webhook.close()

    (row,) = await store.of_entity("ORD-9")
    assert row.status is Status.FAILED and row.attempts == 3  # the first try and two retries
    assert "503" in row.last_error
    assert len(calls) == 3 and calls[0].headers["X-Notification-Id"] == message.id


async def test_a_permanent_refusal_is_not_retried(sqlite_db: Database, store: NotificationStore) -> None:
    guard = CallbackGuard()  # loopback not allowed: the SSRF guard refuses at send time
    webhook = WebhookChannel("http://127.0.0.1:9/notify", guard)
    sender = NotificationSender(store, {EMAIL: webhook}, backoff=(0.0, 0.0))
    async with sqlite_db.transaction() as tx:
        await store.add(tx, _message("ORD-10"))
    assert await sender.run_once() == 1
    await webhook.close()
    (row,) = await store.of_entity("ORD-10")
    assert row.status is Status.FAILED and row.attempts == 1 and "CallbackRefused" in row.last_error


def _message(order_id: str) -> OutboundMessage:
    return OutboundMessage(
        f"msg-{order_id}", EMAIL, "ada@example.com", "s", "b", "order-completed", "e-1", order_id
    )
