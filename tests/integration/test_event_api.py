"""TMF688 over HTTP (in-process ASGI) on SQLite: topics, publishing to the bus, topic listeners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from strowger.components.events_api import event_router
from strowger.events.envelope import Envelope, encode
from strowger.store.db import Database, Transaction
from strowger.tmf.hubs import CallbackGuard

pytestmark = pytest.mark.integration

BASE = "/tmf-api/event/v4"
ALARM = {
    "eventType": "AlarmCreateNotification",
    "correlationId": "c-42",
    "domain": "Paris",
    "event": {"alarm": {"id": "alarm-1", "perceivedSeverity": "CRITICAL"}},
}


class RecordingSink:
    """Keeps the events of committed transactions only, like the outbox would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        tx.on_commit(lambda: self.events.append((topic, envelope)))


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sqlite_db: Database, sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(event_router(sqlite_db, sink, CallbackGuard.from_settings(["127.0.0.0/8"])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        yield http


async def create_topic(client: httpx.AsyncClient, name: str = "ext.alarms") -> dict[str, Any]:
    response = await client.post(f"{BASE}/topic", json={"name": name, "contentQuery": "x=1"})
    assert response.status_code == 201, response.text
    topic: dict[str, Any] = response.json()
    return topic


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == str(status) and body["@type"] == "Error"
    return body


async def test_topic_crud_and_its_events(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    topic = await create_topic(client)
    assert topic["href"] == f"{BASE}/topic/{topic['id']}"
    assert (await client.get(topic["href"])).json() == topic
    listed = await client.get(f"{BASE}/topic?name=ext.alarms")
    assert [t["id"] for t in listed.json()] == [topic["id"]] and listed.headers["x-total-count"] == "1"
    assert (await client.patch(topic["href"], json={"name": "y"})).status_code == 405
    assert (await client.delete(topic["href"])).status_code == 204
    assert_error(await client.get(topic["href"]), 404)
    assert [(t, e.event_type) for t, e in sink.events] == [
        ("ops.system.events", "TopicCreateEvent"),
        ("ops.system.events", "TopicDeleteEvent"),
    ]


async def test_topic_names_are_bus_topics_a_client_may_use(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(f"{BASE}/topic", json={"contentQuery": "x"}), 400)
    assert_error(await client.post(f"{BASE}/topic", json={"name": "bad name/with slash"}), 400)
    body = assert_error(await client.post(f"{BASE}/topic", json={"name": "bss.ordering.events"}), 400)
    assert body["code"] == "forbiddenTopic"
    await create_topic(client, "bss.notification.events")  # notifications are for external parties


async def test_publishing_an_event_writes_it_to_the_sink_on_the_topic(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    topic = await create_topic(client)
    sink.events.clear()
    response = await client.post(f"{topic['href']}/event", json=ALARM)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["href"] == f"{topic['href']}/event/{stored['id']}" == response.headers["location"]
    assert (await client.get(stored["href"])).json() == stored
    (bus_topic, envelope), *_ = sink.events
    assert bus_topic == "ext.alarms" and envelope.event_type == "AlarmCreateNotification"
    assert (envelope.event_id, envelope.correlation_id) == (stored["eventId"], "c-42")
    assert envelope.payload == ALARM["event"] and envelope.entity_key == "alarm-1"
    message = encode(envelope, bus_topic)
    assert message.key == "alarm-1" and b"CRITICAL" in message.value
    listed = await client.get(
        f"{topic['href']}/event?event.alarm.perceivedSeverity=CRITICAL&fields=eventType"
    )
    assert listed.json() == [
        {
            "id": stored["id"],
            "href": stored["href"],
            "@type": "Event",
            "eventType": "AlarmCreateNotification",
        }
    ]
    assert (await client.get(f"{topic['href']}/event?domain=Lyon")).json() == []


async def test_a_client_supplied_event_id_is_kept_for_deduplication(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    topic = await create_topic(client)
    response = await client.post(f"{topic['href']}/event", json={**ALARM, "eventId": "evt-7"})
    assert response.json()["eventId"] == "evt-7" == sink.events[-1][1].event_id


async def test_invalid_events_and_unknown_topics(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    topic = await create_topic(client)
    sink.events.clear()
    url = f"{topic['href']}/event"
    assert "eventType" in assert_error(await client.post(url, json={"event": {}}), 400)["message"]
    assert_error(await client.post(url, json={"eventType": "X", "event": "text"}), 400)
    assert_error(await client.post(url, json={**ALARM, "eventTime": "yesterday"}), 400)
    assert_error(await client.post(url, json={**ALARM, "id": "mine"}), 400)
    assert sink.events == []
    assert_error(await client.post(f"{BASE}/topic/nope/event", json=ALARM), 404)
    assert_error(await client.get(f"{BASE}/topic/nope/event"), 404)
    assert_error(await client.get(f"{url}/nope"), 404)


async def test_topic_listeners(client: httpx.AsyncClient) -> None:
    topic = await create_topic(client)
    hub = f"{topic['href']}/hub"
    response = await client.post(hub, json={"callback": "http://127.0.0.1:9/cb", "query": "eventType=A"})
    assert response.status_code == 201, response.text
    listener = response.json()
    assert response.headers["location"] == f"{hub}/{listener['id']}"
    assert (await client.get(hub)).json() == [listener]
    assert (await client.get(f"{hub}/{listener['id']}")).json() == listener
    assert_error(await client.post(hub, json={"callback": "http://169.254.169.254/"}), 400)
    assert (await client.delete(f"{hub}/{listener['id']}")).status_code == 204
    assert_error(await client.get(f"{hub}/{listener['id']}"), 404)
    assert_error(await client.get(f"{BASE}/topic/nope/hub"), 404)


async def test_openapi_lists_the_nested_paths(client: httpx.AsyncClient) -> None:
    spec = (await client.get(f"{BASE}/openapi.json")).json()
    assert {
        f"{BASE}/topic",
        f"{BASE}/topic/{{topicId}}/event",
        f"{BASE}/topic/{{topicId}}/hub/{{id}}",
    } <= set(spec["paths"])
