"""Hub webhook delivery end to end: bus → fan-out consumer → delivery worker → a REAL HTTP listener.

The listener is a uvicorn server on 127.0.0.1 (random port); the SSRF guard
allows loopback only. Each test runs on SQLite and on PostgreSQL (the embedded
bus lives in the same database), so the queue's SQL and locking run for real.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from strowger.bootstrap import bootstrap
from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import Consumer, ConsumerRunner
from strowger.events.envelope import Category, Envelope, encode, format_time
from strowger.events.topics import Topic
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.deadletters import PARKED_TABLES, DeadLetterFilter, DeadLetterQueue
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from strowger.tmf.delivery import (
    EVENT_ID_HEADER,
    HUB_CONSUMER,
    HUB_DELIVERY_TABLES,
    AiohttpWebhookClient,
    DeliveryOptions,
    DeliveryWorker,
    Http1WebhookClient,
    HttpxWebhookClient,
    HubFanOut,
    HubRoute,
    ListenerUnavailable,
    UnsendableDelivery,
    WebhookClient,
    queue_name,
)
from strowger.tmf.hubs import (
    HUB_TABLES,
    SIGNATURE_HEADER,
    CallbackGuard,
    HubStore,
    UnsafeCallback,
    sign,
    verify,
)
from strowger.tmf.listener import Listener, NotificationReceiver, listener_router
from tests.conftest import unique

pytestmark = pytest.mark.integration

API = "productOrderingManagement"
EVENT_TYPES = frozenset({"ProductOrderCreateEvent", "ProductOrderStateChangeEvent"})
LOOPBACK_ONLY = CallbackGuard((ipaddress.ip_network("127.0.0.0/8"),))
TIMEOUT = 20.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] | None = None  # the client's (address, port): one per connection

    @property
    def json(self) -> dict[str, object]:
        loaded: dict[str, object] = orjson.loads(self.body)
        return loaded


@dataclass
class RealListener:
    """A uvicorn HTTP server recording every POST; ``status[path]`` chooses the answer."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    answers: dict[str, Response] = field(default_factory=dict)  # a whole answer, for the path
    delays: dict[str, float] = field(default_factory=dict)  # seconds before answering, for the path
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def record(path: str, request: Request) -> Response:
            peer = (request.client.host, request.client.port) if request.client else None
            self.received.append(Received(f"/{path}", dict(request.headers), await request.body(), peer))
            await asyncio.sleep(self.delays.get(f"/{path}", 0.0))
            return self.answers.get(f"/{path}") or Response(status_code=self.status.get(f"/{path}", 204))

        return app

    async def start(self) -> None:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


async def wait_until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        outcome = check()
        if await outcome if not isinstance(outcome, bool) else outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")
        await asyncio.sleep(0.05)


def order_event(order_id: str, state: str, seq: int = 0, event_type: str = "") -> Envelope:
    return Envelope(
        event_type=event_type or "ProductOrderStateChangeEvent",
        payload={"productOrder": {"id": order_id, "state": state, "seq": seq}},
        entity_key=order_id,
        correlation_id=f"corr-{order_id}",
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")
    return db


@pytest.fixture
async def listener() -> AsyncIterator[RealListener]:
    server = RealListener()
    await server.start()
    yield server
    await server.stop()


@dataclass
class Hub:
    bus: EmbeddedBus
    database: Database
    topic: str
    store: HubStore
    worker: DeliveryWorker
    runner: ConsumerRunner
    fan_out: HubFanOut

    async def publish(self, *envelopes: Envelope, produced_at: datetime | None = None) -> None:
        await self.bus.publish(
            [encode(envelope, self.topic, produced_at=produced_at) for envelope in envelopes]
        )


@asynccontextmanager
async def running_hub(database: Database, *, direct: bool, **options: Any) -> AsyncIterator[Hub]:
    """The fan-out consumer and the worker, with the direct path on or off (every test runs both)."""
    # Created up front, as the platform does at start (concurrent DDL races on PostgreSQL).
    await database.create_tables(HUB_TABLES, PARKED_TABLES, HUB_DELIVERY_TABLES, INBOX_TABLES, OUTBOX_TABLES)
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    topic = unique("hub")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=3)])
    options = {"timeout": 2.0, "backoff": (0.2, 0.3, 0.4), "lease": 5.0, "poll_interval": 0.2, **options}
    worker = DeliveryWorker(database, LOOPBACK_ONLY, DeliveryOptions(**options), stranded_interval=0.5)
    fan_out = HubFanOut(
        [HubRoute(API, topic, EVENT_TYPES)],
        postgresql=database.kind == "postgresql",
        wake=worker.wake,
        database=database,
        direct=worker if direct else None,
    )
    runner = ConsumerRunner(fan_out.consumer(backoff=(0.1,)), bus, database, fetch_timeout=0.2)
    tasks = [asyncio.create_task(runner.run()), asyncio.create_task(worker.run())]
    await wait_until(lambda: runner.started.is_set(), "the fan-out consumer to join")
    yield Hub(bus, database, topic, HubStore(database, API), worker, runner, fan_out)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert not [r for r in results if not isinstance(r, asyncio.CancelledError | type(None))], results
    await bus.stop()


@pytest.fixture(params=["queued", "direct"])
async def hub(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[Hub]:
    async with running_hub(database, direct=request.param == "direct") as running:
        yield running


async def queued_count(database: Database, queue: str) -> int:
    row = await database.fetchone("SELECT COUNT(*) FROM parked WHERE consumer = ?", (queue,))
    return int(row[0]) if row else 0


async def test_delivers_exactly_the_filtered_events_with_signature(hub: Hub, listener: RealListener) -> None:
    completed = await hub.store.add(
        listener.url("/completed"),
        "eventType=ProductOrderStateChangeEvent&event.productOrder.state=completed",
        secret="s3cret",
    )
    everything = await hub.store.add(listener.url("/all"))
    events = [
        order_event("o1", "inProgress"),
        order_event("o1", "completed", 1),
        order_event("o2", "completed", event_type="ProductOrderCreateEvent"),
        order_event("o3", "completed"),
    ]
    await hub.publish(*events)
    await wait_until(lambda: len(listener.at("/all")) == 4 and len(listener.at("/completed")) == 2, "4 + 2")
    await asyncio.sleep(0.3)  # nothing more arrives

    filtered = listener.at("/completed")
    assert len(filtered) == 2 and len(listener.at("/all")) == 4
    assert {r.headers[EVENT_ID_HEADER.lower()] for r in filtered} == {events[1].event_id, events[3].event_id}
    for received in filtered:
        assert received.json["eventType"] == "ProductOrderStateChangeEvent"
        assert verify("s3cret", received.body, received.headers[SIGNATURE_HEADER.lower()])
        assert not verify("wrong", received.body, received.headers[SIGNATURE_HEADER.lower()])
        assert received.headers["x-correlation-id"] == f"corr-{received.json['event']['productOrder']['id']}"  # type: ignore[index]
        assert received.headers["content-type"] == "application/json"
    unsigned = listener.at("/all")[0]
    assert SIGNATURE_HEADER.lower() not in unsigned.headers
    # the body is the message's JSON as published, byte for byte
    assert {r.body for r in listener.at("/all")} == {encode(e, hub.topic).value for e in events}
    assert hub.worker.stats.delivered == 6
    assert completed.id != everything.id


async def test_events_nobody_subscribed_to_are_skipped_before_decoding(
    hub: Hub, listener: RealListener
) -> None:
    subscribed = hub.fan_out.subscribed
    assert subscribed is not None
    subscribed.max_age = 3600.0  # no expiry during the test: only a subscription change refreshes it
    await subscribed.refresh()
    # A backlog: events produced before the subscriptions were read (beyond the clock skew).
    backlog = datetime.now(UTC) - timedelta(minutes=5)
    before = order_event("o20", "inProgress")
    await hub.publish(before, produced_at=backlog)
    await wait_until(lambda: hub.runner.stats.filtered >= 1, "the event skipped by type")
    assert hub.runner.stats.applied == 0  # never decoded nor handed to the fan-out

    # A subscription made in this process counts at once, without waiting for the cache to age.
    await hub.store.add(listener.url("/late"), "eventType=ProductOrderStateChangeEvent")
    after = order_event("o21", "completed")
    await hub.publish(after)
    await wait_until(lambda: len(listener.at("/late")) == 1, "the first event after subscribing")

    await subscribed.refresh()
    filtered = hub.runner.stats.filtered
    backlog = datetime.now(UTC) - timedelta(minutes=5)
    await hub.publish(
        order_event("o22", "acknowledged", event_type="ProductOrderCreateEvent"), produced_at=backlog
    )
    await wait_until(lambda: hub.runner.stats.filtered > filtered, "a type the subscription does not name")
    await hub.publish(final := order_event("o23", "completed", 1))
    await wait_until(lambda: len(listener.at("/late")) == 2, "the next subscribed event")
    received = [r.headers[EVENT_ID_HEADER.lower()] for r in listener.at("/late")]
    assert received == [after.event_id, final.event_id]  # not o20 (before), not o22 (other type)


async def test_a_subscription_made_by_another_process_gets_the_events_produced_after_it(
    hub: Hub, listener: RealListener, database: Database
) -> None:
    """The chaos suite's lost webhook: the API process subscribed, hub-delivery's cache said "nobody"."""
    subscribed = hub.fan_out.subscribed
    assert subscribed is not None
    subscribed.max_age = 3600.0  # the cache stays fresh: it will not notice the new row by itself
    await subscribed.refresh()
    # Another process's POST /hub: the row its HubStore.add writes, but no change of THIS
    # process's subscription generation (that is process-local), so the cache stays as read.
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO tmf_hub_subscription (api, id, callback, query, secret, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                hub.store.api,
                "sub-elsewhere",
                listener.url("/elsewhere"),
                "eventType=ProductOrderStateChangeEvent",
                None,
                format_time(datetime.now(UTC)),
            ),
        )
    fresh = order_event("o30", "completed")
    await hub.publish(fresh)  # produced now, after the subscription: must reach it
    await wait_until(lambda: len(listener.at("/elsewhere")) == 1, "the event produced after subscribing")
    assert listener.at("/elsewhere")[0].headers[EVENT_ID_HEADER.lower()] == fresh.event_id


async def test_outage_waits_then_delivers_in_order(hub: Hub, listener: RealListener) -> None:
    await hub.store.add(listener.url("/ordered"))
    await listener.stop()  # a real outage: connection refused
    events = [order_event("o9", "acknowledged", seq) for seq in range(5)]
    events += [order_event("o8", "acknowledged", seq) for seq in range(3)]
    await hub.publish(*events)
    await wait_until(lambda: hub.worker.stats.failed >= 2, "failed attempts during the outage")
    assert listener.received == []
    await listener.start()  # same port

    await wait_until(lambda: len(listener.at("/ordered")) >= 8, "the backlog after the outage")
    for entity, count in (("o9", 5), ("o8", 3)):
        seqs = [
            r.json["event"]["productOrder"]["seq"]  # type: ignore[index]
            for r in listener.at("/ordered")
            if r.json["event"]["productOrder"]["id"] == entity  # type: ignore[index]
        ]
        assert seqs == list(range(count)), f"{entity} out of order: {seqs}"
    assert hub.worker.stats.dead == 0


async def test_an_unsubscribed_listener_gets_nothing_of_its_backlog(hub: Hub, listener: RealListener) -> None:
    gone = await hub.store.add(listener.url("/gone"))
    await hub.store.add(listener.url("/stays"))
    listener.status["/gone"] = 503  # its backlog builds up in the queue
    await hub.publish(*[order_event("o6", "acknowledged", seq) for seq in range(4)])
    await wait_until(lambda: len(listener.at("/stays")) == 4, "the other subscription's events")
    await wait_until(lambda: hub.worker.stats.failed >= 1, "a failed attempt to the doomed listener")
    attempts = len(listener.at("/gone"))

    assert await hub.store.remove(gone.id)
    listener.status["/gone"] = 204
    await wait_until(lambda: hub.worker.stats.dropped >= 1, "the removed subscription's queue dropped")
    await hub.publish(order_event("o6", "inProgress", 4))
    await wait_until(lambda: len(listener.at("/stays")) == 5, "the next event to the remaining subscription")
    assert len(listener.at("/gone")) == attempts  # nothing more after the DELETE, nothing dead-lettered
    assert hub.worker.stats.dead == 0


async def test_failing_listener_does_not_block_others_and_dead_letters(
    hub: Hub, listener: RealListener
) -> None:
    listener.status["/gone"] = 410
    gone = await hub.store.add(listener.url("/gone"))
    await hub.store.add(listener.url("/fine"))
    first, second = order_event("o5", "acknowledged", 0), order_event("o5", "inProgress", 1)
    await hub.publish(first, second)

    await wait_until(lambda: len(listener.at("/fine")) == 2, "the healthy listener's deliveries")
    dlq = DeadLetterQueue(hub.database)
    queue = queue_name(API, gone.id)

    async def one_dead() -> bool:
        return len(await dlq.find(DeadLetterFilter(consumer=queue))) == 1

    await wait_until(one_dead, "the 410 delivery in the dead-letter queue")
    (letter,) = await dlq.find(DeadLetterFilter(consumer=queue))
    assert letter.event_id == first.event_id and letter.error_type == "ListenerRejected"
    assert "410" in (letter.error_message or "")
    assert await dlq.waiting_behind(letter) == 1  # the second event waits behind the dead one
    await asyncio.sleep(0.5)
    assert len(listener.at("/gone")) == 1  # permanent: not retried, the later one not sent

    listener.status["/gone"] = 204  # the operator fixed the listener and replays
    await dlq.replay(DeadLetterFilter(consumer=queue))
    await wait_until(lambda: len(listener.at("/gone")) == 3, "the replayed head and the one behind it")
    assert [r.headers[EVENT_ID_HEADER.lower()] for r in listener.at("/gone")][1:] == [
        first.event_id,
        second.event_id,
    ]


async def test_metadata_callback_refused_at_subscription_and_at_delivery(
    hub: Hub, listener: RealListener
) -> None:
    with pytest.raises(UnsafeCallback):
        await LOOPBACK_ONLY.check("http://169.254.169.254/latest/meta-data/")
    # A callback stored behind the guard's back (or made unsafe since) is refused when delivering.
    sneaky = await hub.store.add("http://169.254.169.254/latest/meta-data/")
    await hub.store.add(listener.url("/fine"))
    event = order_event("o7", "completed")
    await hub.publish(event)
    dlq = DeadLetterQueue(hub.database)

    async def refused() -> bool:
        return bool(await dlq.find(DeadLetterFilter(consumer=queue_name(API, sneaky.id))))

    await wait_until(refused, "the refused delivery in the dead-letter queue")
    (letter,) = await dlq.find(DeadLetterFilter(consumer=queue_name(API, sneaky.id)))
    assert letter.error_type == "CallbackRefused" and "metadata" in (letter.error_message or "")
    await wait_until(lambda: len(listener.at("/fine")) == 1, "the safe listener's delivery")


async def test_a_redelivered_event_is_not_posted_again(hub: Hub, listener: RealListener) -> None:
    await hub.store.add(listener.url("/once"))
    first = order_event("o40", "completed")
    await hub.publish(first)
    await wait_until(lambda: len(listener.at("/once")) == 1, "the first delivery")
    await hub.publish(first)  # the same event again (a producer's retry, a redelivery)
    await hub.publish(second := order_event("o41", "completed"))
    await wait_until(lambda: len(listener.at("/once")) == 2, "the next event")
    await asyncio.sleep(0.3)
    assert [r.headers[EVENT_ID_HEADER.lower()] for r in listener.at("/once")] == [
        first.event_id,
        second.event_id,
    ]


async def test_the_direct_path_queues_nothing_when_listeners_answer(
    database: Database, listener: RealListener
) -> None:
    async with running_hub(database, direct=True) as hub:
        subscription = await hub.store.add(listener.url("/direct"))
        events = [order_event(f"o5{k}", "acknowledged", seq) for k in range(3) for seq in range(4)]
        await hub.publish(*events)
        await wait_until(lambda: hub.runner.stats.applied == len(events), "the fan-out's commit")
        assert len(listener.at("/direct")) == len(events)  # POSTed before the fan-out committed
        assert await queued_count(database, queue_name(API, subscription.id)) == 0
        assert hub.worker.stats.delivered == len(events) and hub.worker.stats.failed == 0
        for k in range(3):
            seqs = [
                r.json["event"]["productOrder"]["seq"]  # type: ignore[index]
                for r in listener.at("/direct")
                if r.json["event"]["productOrder"]["id"] == f"o5{k}"  # type: ignore[index]
            ]
            assert seqs == [0, 1, 2, 3]


async def test_a_slow_listener_is_cut_off_by_the_budget_then_served_in_order_from_the_queue(
    database: Database, listener: RealListener
) -> None:
    async with running_hub(database, direct=True, direct_budget=0.3) as hub:
        slow = await hub.store.add(listener.url("/slow"))
        await hub.store.add(listener.url("/fast"))
        listener.delays["/slow"] = 1.0  # within the POST timeout (2 s), beyond the budget
        events = [order_event("o60", "acknowledged", seq) for seq in range(3)]
        started = asyncio.get_running_loop().time()
        await hub.publish(*events)
        await wait_until(lambda: len(listener.at("/fast")) == 3, "the healthy listener's deliveries")
        assert asyncio.get_running_loop().time() - started < 1.0  # not held by the slow one's answer
        # Cut off at the budget: from then on its deliveries go through the queue.
        await wait_until(lambda: hub.worker.degraded(slow.id), "the slow listener marked")

        def firsts() -> list[str]:  # event ids in the order of their first arrival
            return list(dict.fromkeys(r.headers[EVENT_ID_HEADER.lower()] for r in listener.at("/slow")))

        await wait_until(lambda: len(firsts()) == 3, "every event at the slow listener")
        assert firsts() == [e.event_id for e in events]

        async def drained() -> bool:
            return await queued_count(database, queue_name(API, slow.id)) == 0

        await wait_until(drained, "the slow listener's queue to empty")
        assert hub.worker.stats.dead == 0


async def test_listener_side_turns_a_duplicated_notification_into_one_bus_event(database: Database) -> None:
    """The receiving end: verify the signature, dedup by eventId, publish once through the outbox."""
    await database.create_tables(OUTBOX_TABLES)
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    topic = unique("received")
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=1)])
    outbox = Outbox()
    relay = OutboxRelay(database, bus, outbox, poll_interval=0.1)

    class Sink:
        async def emit(self, tx: object, envelope: Envelope, topic: str) -> None:
            await outbox.add(tx, [encode(envelope, topic)])  # type: ignore[arg-type]

    receiver = NotificationReceiver([Listener("crm", topic, secret="k")], database, Sink())
    app = FastAPI()
    app.include_router(listener_router(receiver))
    server = RealListener()
    server.app = lambda: app  # type: ignore[method-assign]
    await server.start()
    relay_task: asyncio.Task[None] | None = None
    try:
        body = orjson.dumps(order_event("o42", "completed").to_tmf())
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign("k", body)}
        async with httpx.AsyncClient() as client:
            answers = [
                (await client.post(server.url("/listener/crm"), content=body, headers=headers)).status_code
                for _ in range(2)
            ]
            forged = await client.post(
                server.url("/listener/crm"), content=body, headers={SIGNATURE_HEADER: sign("x", body)}
            )
        assert answers == [204, 204] and forged.status_code == 401
        # The relay starts once the receiver has made its tables: DDL beside the relay's
        # queries can deadlock on PostgreSQL (the platform makes every table at start).
        relay_task = asyncio.create_task(relay.run())

        reader = bus.subscriber(unique("reader"), [topic])
        await reader.start()
        got = []
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while asyncio.get_running_loop().time() < deadline and len(got) < 1:
            got += await reader.fetch(10, 0.2)
        got += await reader.fetch(10, 0.5)  # and nothing more
        await reader.stop()
        assert len(got) == 1
        assert got[0].message.event_id == orjson.loads(body)["eventId"]
        assert orjson.loads(got[0].message.value)["event"]["productOrder"]["id"] == "o42"
    finally:
        if relay_task is not None:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
        await server.stop()
        await bus.stop()


# --- the HTTP clients under WebhookSender: one contract, one subclass per library ---------------


class WebhookClientContract:
    """What every :class:`WebhookClient` must do against a real listener on loopback."""

    options = DeliveryOptions(timeout=1.0, lease=5.0, max_response_bytes=1024)

    @pytest.fixture
    def client(self) -> WebhookClient:
        raise NotImplementedError

    @pytest.fixture
    async def http(self, client: WebhookClient) -> AsyncIterator[WebhookClient]:
        yield client
        await client.close()

    async def test_posts_the_body_and_headers_and_returns_the_answer(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        answer = await http.post(listener.url("/cb?x=1"), None, b'{"a":1}', {"X-Event-Id": "e-1"})
        assert answer.status == 204
        (received,) = listener.at("/cb")
        assert received.body == b'{"a":1}' and received.headers["x-event-id"] == "e-1"
        assert received.headers["host"] == f"127.0.0.1:{listener.port}"

    async def test_a_named_host_is_reached_at_the_given_address_only(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        # "hooks.invalid" resolves nowhere (RFC 6761): the only way to the listener is the address given.
        url = f"http://hooks.invalid:{listener.port}/named"
        assert (await http.post(url, "127.0.0.1", b"{}", {})).status == 204
        (received,) = listener.at("/named")
        assert received.headers["host"] == f"hooks.invalid:{listener.port}"

    async def test_connections_are_kept_alive(self, http: WebhookClient, listener: RealListener) -> None:
        for _ in range(5):
            await http.post(listener.url("/alive"), None, b"{}", {})
        assert len({received.peer for received in listener.at("/alive")}) == 1

    async def test_a_refusal_is_an_answer_with_status_reason_retry_after_and_text(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        listener.answers["/busy"] = Response("slow down", status_code=503, headers={"Retry-After": "7"})
        answer = await http.post(listener.url("/busy"), None, b"{}", {})
        assert (answer.status, answer.reason, answer.retry_after) == (503, "Service Unavailable", "7")
        assert answer.text == "slow down"

    @pytest.mark.parametrize("host", ["127.0.0.1", "hooks.invalid"])
    async def test_a_cookie_set_by_a_listener_is_never_sent_back(
        self, http: WebhookClient, listener: RealListener, host: str
    ) -> None:
        # One client serves every subscription: a cookie kept from one listener would ride
        # along on deliveries to another subscription's callback on the same host.
        listener.answers["/sets"] = Response(status_code=204, headers={"Set-Cookie": "session=abc; Path=/"})
        for path in ("/sets", "/other"):
            await http.post(f"http://{host}:{listener.port}{path}", "127.0.0.1", b"{}", {})
        (received,) = listener.at("/other")
        assert "cookie" not in received.headers

    async def test_a_redirect_is_not_followed(self, http: WebhookClient, listener: RealListener) -> None:
        listener.answers["/moved"] = Response(
            status_code=302, headers={"Location": listener.url("/elsewhere")}
        )
        assert (await http.post(listener.url("/moved"), None, b"{}", {})).status == 302
        assert listener.at("/elsewhere") == []

    async def test_a_flood_is_read_only_up_to_the_limit(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        listener.answers["/flood"] = Response(b"x" * 500_000, status_code=400)
        answer = await http.post(listener.url("/flood"), None, b"{}", {})
        assert answer.status == 400 and answer.text == "x" * 200
        assert (await http.post(listener.url("/after"), None, b"{}", {})).status == 204  # still usable

    async def test_a_refused_connection_is_unavailable(self, http: WebhookClient) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nobody listens once the probe is closed
        with pytest.raises(ListenerUnavailable, match="failed"):
            await http.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})

    async def test_a_silent_listener_times_out_as_unavailable(self, http: WebhookClient) -> None:
        writers: list[asyncio.StreamWriter] = []

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await reader.read(65536)  # and never answer

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ListenerUnavailable, match="timed out"):
                await http.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})
        finally:
            for writer in writers:
                writer.close()
            server.close()
            await server.wait_closed()


class TestHttp1WebhookClient(WebhookClientContract):
    @pytest.fixture
    def client(self) -> WebhookClient:
        return Http1WebhookClient(self.options)

    async def test_a_host_never_checked_is_not_connected(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        # localhost does resolve to the listener: this client resolves no name at all.
        with pytest.raises(UnsendableDelivery, match="no checked address"):
            await http.post(f"http://localhost:{listener.port}/unchecked", None, b"{}", {})
        assert listener.at("/unchecked") == []

    async def test_a_header_with_a_line_break_is_never_sent(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        with pytest.raises(UnsendableDelivery, match="line break"):
            await http.post(listener.url("/injected"), None, b"{}", {"X-Correlation-ID": "a\r\nX-Admin: 1"})
        assert listener.at("/injected") == []


class TestAiohttpWebhookClient(WebhookClientContract):
    @pytest.fixture
    def client(self) -> WebhookClient:
        return AiohttpWebhookClient(self.options)

    async def test_a_host_never_checked_is_not_connected(
        self, http: WebhookClient, listener: RealListener
    ) -> None:
        # localhost does resolve to the listener: only the pinned resolver stands in the way.
        with pytest.raises(ListenerUnavailable):
            await http.post(f"http://localhost:{listener.port}/unchecked", None, b"{}", {})
        assert listener.at("/unchecked") == []


class TestHttpxWebhookClient(WebhookClientContract):
    @pytest.fixture
    def client(self) -> WebhookClient:
        return HttpxWebhookClient(self.options)


def test_the_platform_wires_the_direct_path_as_its_settings_say(tmp_path: Path) -> None:
    def hub_consumer(settings: Settings) -> Consumer:
        platform = bootstrap(settings)
        return next(runner.consumer for runner in platform.runners if runner.consumer.name == HUB_CONSUMER)

    url = f"sqlite:///{tmp_path}/strowger.db"
    assert hub_consumer(Settings(database_url=url)).prepare is not None  # on by default
    assert hub_consumer(Settings(database_url=url, hub_direct_delivery=False)).prepare is None
