"""The order trace timeline on SQLite and PostgreSQL (and the alert state that survives a restart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console

from strowger.events.envelope import Envelope, encode
from strowger.ops.alerts import (
    ALERT_FIRED,
    ALERT_RESOLVED,
    AlertEngine,
    AlertInputs,
    AlertMonitor,
    AlertSettings,
    DeadLetterDepth,
)
from strowger.ops.trace_timeline import (
    TRACE_TABLES,
    Outcome,
    TraceRecorder,
    TraceStore,
    render_timeline,
    router,
)
from strowger.store.db import Database, Transaction

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ORDERS = "bss.ordering.events"
SERVICE_COMMANDS = "oss.service.commands"


@pytest.fixture(params=["sqlite_db", "postgres_db"])
def database(request: pytest.FixtureRequest) -> Database:
    # A sync fixture: pytest-asyncio sets up the async database fixture it names.
    db: Database = request.getfixturevalue(request.param)
    return db


def ms(milliseconds: float) -> datetime:
    return T0 + timedelta(milliseconds=milliseconds)


async def handled(
    db: Database, envelope: Envelope, topic: str, consumer: str, produced: float, done: float, outcome: str
) -> None:
    message = encode(envelope, topic, produced_at=ms(produced))
    async with db.transaction() as tx:
        await TraceRecorder().record(tx, envelope, message, consumer, outcome, handled_at=ms(done))


async def record_order(db: Database, order_id: str, correlation_id: str) -> tuple[Envelope, Envelope]:
    """An order taken by the API, decomposed into a service order, billed, the service order retried."""
    await db.create_tables(TRACE_TABLES)
    created = Envelope(
        event_type="ProductOrderCreateEvent",
        payload={"productOrder": {"id": order_id, "state": "acknowledged"}},
        entity_key=order_id,
        correlation_id=correlation_id,
        producer="productOrdering",
    )
    async with db.transaction() as tx:
        await TraceRecorder().record_published(tx, created, ORDERS, produced_at=ms(0))
    await handled(db, created, ORDERS, "ordering-saga", produced=0, done=12, outcome=Outcome.APPLIED)
    await handled(db, created, ORDERS, "billing", produced=0, done=30, outcome=Outcome.APPLIED)
    command = created.caused(
        "ServiceOrderCreateCommand",
        {"serviceOrder": {"id": f"SO-{order_id}"}},
        entity_key=f"SO-{order_id}",
        producer="ordering-saga",
    )
    await handled(
        db, command, SERVICE_COMMANDS, "service-ordering", produced=10, done=45, outcome=Outcome.PARKED
    )
    await handled(
        db, command, SERVICE_COMMANDS, "service-ordering", produced=10, done=1045, outcome=Outcome.APPLIED
    )
    return created, command


async def test_the_timeline_of_an_order_follows_its_correlation_across_components(database: Database) -> None:
    await record_order(database, "PO-1", "corr-1")
    await record_order(database, "PO-2", "corr-2")
    timeline = await TraceStore(database).timeline("PO-1")
    rows = [(h.hop.event_type, h.hop.consumer, h.hop.outcome) for h in timeline.hops]
    assert rows == [
        ("ProductOrderCreateEvent", "", "published"),
        ("ProductOrderCreateEvent", "ordering-saga", "applied"),
        ("ProductOrderCreateEvent", "billing", "applied"),
        ("ServiceOrderCreateCommand", "service-ordering", "parked"),
        ("ServiceOrderCreateCommand", "service-ordering", "applied"),
    ]
    latencies = [hop.latency for hop in timeline.hops]
    assert latencies == [None, timedelta(milliseconds=12), timedelta(milliseconds=30),
                         timedelta(milliseconds=35), timedelta(milliseconds=1035)]  # fmt: skip
    retried = timeline.hops[-1]
    assert retried.cause_event_type == "ProductOrderCreateEvent"
    assert retried.since_cause == timedelta(milliseconds=10)
    assert timeline.duration == timedelta(milliseconds=1045)
    assert timeline.events == 2
    assert {hop.hop.entity_key for hop in timeline.hops} == {"PO-1", "SO-PO-1"}


async def test_a_correlation_id_or_an_event_id_finds_the_same_timeline(database: Database) -> None:
    _, command = await record_order(database, "PO-1", "corr-1")
    store = TraceStore(database)
    by_order = await store.timeline("PO-1")
    assert (await store.timeline("corr-1")).to_json()["hops"] == by_order.to_json()["hops"]
    assert (await store.timeline(command.event_id)).to_json()["hops"] == by_order.to_json()["hops"]
    assert (await store.timeline("nothing-like-it")).hops == ()


async def test_trace_api_returns_json_and_404(database: Database) -> None:
    await record_order(database, "PO-1", "corr-1")
    app = FastAPI()
    app.state.platform = SimpleNamespace(database=database)
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        found = await client.get("/trace/PO-1")
        missing = await client.get("/trace/PO-404")
    assert found.status_code == 200
    body = found.json()
    assert body["correlationIds"] == ["corr-1"]
    assert body["durationMs"] == 1045.0
    assert [hop["latencyMs"] for hop in body["hops"]] == [None, 12.0, 30.0, 35.0, 1035.0]
    assert body["hops"][-1]["causeEventType"] == "ProductOrderCreateEvent"
    assert body["hops"][-1]["sinceCauseMs"] == 10.0
    assert missing.status_code == 404


async def test_the_rendered_timeline_lists_every_hop(database: Database) -> None:
    await record_order(database, "PO-1", "corr-1")
    console = Console(record=True, width=200)
    console.print(render_timeline(await TraceStore(database).timeline("PO-1")))
    text = console.export_text()
    assert "Trace PO-1" in text
    assert text.count("ServiceOrderCreateCommand") == 2
    assert "ordering-saga → service-ordering" in text
    assert "1.045 s" in text
    assert "2 event(s), 5 hop(s)" in text


async def test_prune_removes_old_hops(database: Database) -> None:
    await record_order(database, "PO-1", "corr-1")
    async with database.transaction() as tx:
        assert await TraceRecorder().prune(tx, ms(5)) == 3  # the hops of the event produced at 0
    assert [h.hop.event_type for h in (await TraceStore(database).timeline("corr-1")).hops] == [
        "ServiceOrderCreateCommand",
        "ServiceOrderCreateCommand",
    ]


# Alert state on the database port ------------------------------------------------------------


class ScriptedSource:
    def __init__(self) -> None:
        self.inputs = AlertInputs()

    async def sample(self) -> AlertInputs:
        return self.inputs


class RecordingSink:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str]] = []

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        self.emitted.append((envelope.event_type, topic))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def monitor(db: Database, source: ScriptedSource, sink: RecordingSink, clock: Clock) -> AlertMonitor:
    engine = AlertEngine.from_settings(AlertSettings(resolve_after_seconds=60))
    return AlertMonitor(db, source, sink, engine, clock=clock)


async def test_a_restarted_monitor_does_not_fire_again_and_resolves_once(database: Database) -> None:
    source, sink, clock = ScriptedSource(), RecordingSink(), Clock()
    source.inputs = AlertInputs(dead_letters=[DeadLetterDepth("billing", "SchemaViolation", 2)])
    first = monitor(database, source, sink, clock)
    await first.check()
    await first.check()
    assert sink.emitted == [(ALERT_FIRED, "ops.alerts")]

    restarted = monitor(database, source, sink, clock)  # a new process on the same database
    clock.now += timedelta(seconds=10)
    await restarted.check()
    assert sink.emitted == [(ALERT_FIRED, "ops.alerts")]
    assert [alert.name for alert in restarted.active_alerts()] == ["DeadLetters"]

    source.inputs = AlertInputs()
    await restarted.check()
    clock.now += timedelta(seconds=61)
    await restarted.check()
    await restarted.check()
    assert sink.emitted == [(ALERT_FIRED, "ops.alerts"), (ALERT_RESOLVED, "ops.alerts")]
    assert monitor(database, source, sink, clock).active_alerts() == []


async def test_a_failed_emit_rolls_back_the_state_so_the_alert_fires_next_time(database: Database) -> None:
    class FailingOnce(RecordingSink):
        failed = False

        async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
            if not self.failed:
                self.failed = True
                raise ConnectionError("outbox unavailable")
            await super().emit(tx, envelope, topic)

    source, sink, clock = ScriptedSource(), FailingOnce(), Clock()
    source.inputs = AlertInputs(outbox_oldest_age_seconds=600)
    alerts = monitor(database, source, sink, clock)
    with pytest.raises(ConnectionError):
        await alerts.check()
    assert alerts.active_alerts() == []
    await alerts.check()
    assert sink.emitted == [(ALERT_FIRED, "ops.alerts")]
