"""Saga metrics and saga health under induced conditions, on SQLite and PostgreSQL.

The toy saga of the saga contract runs through the real engine with a fake clock, so the
durations and step latencies the metrics observe are exact: a slow step, a burst of
compensations, a transaction that rolls back. The dashboard's saga health (p50/p95/p99 per
saga type and order type, the compensation rate over a rolling window with its top reasons)
is read from the same sagas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from strowger.bootstrap import bootstrap
from strowger.components.service_ordering.saga import order_type
from strowger.components.service_ordering.wiring import build_service_ordering
from strowger.ops import tracing
from strowger.ops.dashboard.data import saga_health
from strowger.ops.metrics import Metrics
from strowger.ops.saga_metrics import SagaMetrics, order_type_of, reason_kind
from strowger.saga import SAGA_TABLES, SagaEngine, SagaRegistry, SagaState
from strowger.settings import Settings
from strowger.store.db import Database
from tests.contract.saga_contract import TOY, Clock, FakeSink

pytestmark = pytest.mark.integration


class Rollback(Exception):
    pass


class Toy:
    """The toy saga on a database, observed into a fresh registry."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.sink, self.clock, self.metrics = FakeSink(), Clock(), Metrics()
        self.engine = SagaEngine(
            SagaRegistry([TOY]), self.sink, clock=self.clock, observer=SagaMetrics(self.metrics)
        )

    async def start(self, saga_id: str, order_type: str | None = "add") -> SagaState:
        data: dict[str, Any] = {"service": saga_id}
        if order_type is not None:
            data["orderType"] = order_type
        async with self.database.transaction() as tx:
            return await self.engine.start(tx, "toy", data, saga_id=saga_id)

    async def reply(self, saga_id: str, to: str, suffix: str = "Done", **payload: Any) -> bool:
        [command] = [e for _, e in self.sink.sent if e.event_type == to and e.extra.get("sagaId") == saga_id][
            -1:
        ]
        reply = command.caused(f"{to}{suffix}", payload or {"result": {"ok": True}})
        async with self.database.transaction() as tx:
            return (await self.engine.handle_reply(tx, reply)).applied

    async def complete(self, saga_id: str, step_seconds: float) -> None:
        for action in ("Reserve", "Activate", "Bill"):
            self.clock.advance(step_seconds)
            assert await self.reply(saga_id, action)

    async def fail_at_activate(self, saga_id: str, error: str) -> None:
        assert await self.reply(saga_id, "Reserve")
        self.clock.advance(1)
        assert await self.reply(saga_id, "Activate", "Failed", error=error, permanent=True)
        self.clock.advance(2)
        assert await self.reply(saga_id, "Release")

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    # A sync fixture: pytest-asyncio sets up the async database fixture it names.
    db: Database = request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")
    return db


@pytest.fixture
async def toy(database: Database) -> Toy:
    await database.create_tables(SAGA_TABLES)
    return Toy(database)


async def test_a_slow_step_shows_in_its_step_latency_and_the_saga_duration(toy: Toy) -> None:
    await toy.start("s-1")
    toy.clock.advance(0.2)
    assert await toy.reply("s-1", "Reserve")
    toy.clock.advance(4)  # activate is the slow hop
    assert await toy.reply("s-1", "Activate")
    toy.clock.advance(0.3)
    assert await toy.reply("s-1", "Bill")

    step = "strowger_saga_step_latency_seconds"
    assert toy.value(f"{step}_sum", saga_type="toy", step="reserve") == pytest.approx(0.2)
    assert toy.value(f"{step}_sum", saga_type="toy", step="activate") == pytest.approx(4.0)
    assert toy.value(f"{step}_bucket", saga_type="toy", step="activate", le="2.5") == 0
    assert toy.value(f"{step}_bucket", saga_type="toy", step="bill", le="0.5") == 1
    duration = {"saga_type": "toy", "order_type": "add", "outcome": "completed"}
    assert toy.value("strowger_saga_duration_seconds_count", **duration) == 1
    assert toy.value("strowger_saga_duration_seconds_sum", **duration) == pytest.approx(4.5)
    assert toy.value("strowger_compensations_total", saga_type="toy", reason="step activate failed") == 0


async def test_a_burst_of_compensations_is_counted_by_reason_kind_and_outcome(toy: Toy) -> None:
    for number in range(3):
        await toy.start(f"s-{number}", order_type="delete")
        await toy.fail_at_activate(f"s-{number}", error=f"port {number} down")
    await toy.start("s-ok", order_type="delete")
    await toy.complete("s-ok", step_seconds=1)

    reason = {"saga_type": "toy", "reason": "step activate failed"}
    assert toy.value("strowger_compensations_total", **reason) == 3  # the port numbers are not labels
    failed = {"saga_type": "toy", "order_type": "delete", "outcome": "failed"}
    assert toy.value("strowger_saga_duration_seconds_count", **failed) == 3
    assert toy.value("strowger_saga_duration_seconds_sum", **failed) == pytest.approx(9.0)
    completed = {"saga_type": "toy", "order_type": "delete", "outcome": "completed"}
    assert toy.value("strowger_saga_duration_seconds_count", **completed) == 1
    undo = {"saga_type": "toy", "step": "reserve/compensation"}
    assert toy.value("strowger_saga_step_latency_seconds_count", **undo) == 3
    assert toy.value("strowger_saga_step_latency_seconds_sum", **undo) == pytest.approx(6.0)


async def test_a_rolled_back_transaction_observes_nothing(toy: Toy) -> None:
    await toy.start("s-1")
    toy.clock.advance(1)
    [reserve] = [e for _, e in toy.sink.sent if e.event_type == "Reserve"]
    with pytest.raises(Rollback):
        async with toy.database.transaction() as tx:
            assert (await toy.engine.handle_reply(tx, reserve.caused("ReserveDone", {}))).applied
            raise Rollback
    assert toy.value("strowger_saga_step_latency_seconds_count", saga_type="toy", step="reserve") == 0
    assert await toy.reply("s-1", "Reserve")  # redelivered: observed once, now that it commits
    assert toy.value("strowger_saga_step_latency_seconds_count", saga_type="toy", step="reserve") == 1


async def test_a_late_reply_to_an_earlier_attempt_is_timed_from_that_attempt(toy: Toy) -> None:
    await toy.start("s-1")
    [first] = [e for _, e in toy.sink.sent if e.event_type == "Reserve"]
    toy.clock.advance(11)  # past the 10 s timeout: the scheduler sends Reserve again after 1 s
    async with toy.database.transaction() as tx:
        await toy.engine.tick(tx)
    toy.clock.advance(1)
    async with toy.database.transaction() as tx:
        await toy.engine.tick(tx)
    assert [e.event_type for _, e in toy.sink.sent].count("Reserve") == 2
    toy.clock.advance(0.5)
    async with toy.database.transaction() as tx:  # the first attempt's answer arrives at last
        assert (await toy.engine.handle_reply(tx, first.caused("ReserveDone", {}))).applied
    assert not await toy.reply("s-1", "Reserve")  # the second attempt's answer changes nothing
    latency = "strowger_saga_step_latency_seconds"
    assert toy.value(f"{latency}_count", saga_type="toy", step="reserve") == 1
    assert toy.value(f"{latency}_sum", saga_type="toy", step="reserve") == pytest.approx(12.5)


async def test_saga_health_gives_percentiles_per_order_type_and_the_windowed_compensation_rate(
    toy: Toy,
) -> None:
    for number, seconds in enumerate((1, 2, 3, 10)):
        await toy.start(f"add-{number}", order_type="add")
        await toy.complete(f"add-{number}", step_seconds=seconds)
    await toy.start("modify-0", order_type="modify")
    await toy.complete("modify-0", step_seconds=20)
    await toy.start("legacy", order_type=None)  # a saga whose data names no order type
    await toy.complete("legacy", step_seconds=1)
    for number, port in enumerate((1, 2, 1)):  # three failures of one kind, with their own details
        await toy.start(f"bad-{number}", order_type="add")
        await toy.fail_at_activate(f"bad-{number}", error=f"port {port} down")
    await toy.start("cancelled")
    assert await toy.reply("cancelled", "Reserve")
    async with toy.database.transaction() as tx:
        await toy.engine.cancel(tx, "cancelled", "customer changed their mind")
    for answer in ("Activate", "Deactivate", "Release"):  # activate was in flight: awaited, then undone
        assert await toy.reply("cancelled", answer)

    health = await saga_health(toy.database, now=toy.clock.now)

    by_order = {d["orderType"]: d for d in health["durations"]}
    assert set(by_order) == {"add", "modify", "unspecified"}
    assert [by_order["add"][p] for p in ("completed24h", "p50", "p95", "p99")] == [4, 6.0, 30.0, 30.0]
    assert (by_order["modify"]["p50"], by_order["unspecified"]["p50"]) == (60.0, 3.0)
    [toy_type] = health["types"]
    assert (toy_type["completed24h"], toy_type["p50"], toy_type["max"]) == (6, 6.0, 60.0)
    compensation = toy_type["compensation"]
    assert (compensation["finished"], compensation["compensated"]) == (10, 4)
    assert compensation["rate"] == toy_type["compensationRate"] == 0.4
    assert compensation["topReasons"] == [
        {"reason": "step activate failed", "count": 3, "example": "step activate failed: port 1 down"},
        {"reason": "cancelled", "count": 1, "example": "cancelled: customer changed their mind"},
    ]

    # An hour on, nothing ended within the 15 minute window, but the day's durations remain.
    later = await saga_health(toy.database, now=toy.clock.now + timedelta(hours=1))
    assert later["types"][0]["compensation"]["finished"] == 0
    assert later["types"][0]["compensationRate"] == 0.0
    assert later["durations"] == health["durations"]


def test_labels_stay_bounded() -> None:
    assert reason_kind("step activate failed: port 42 on olt-7 down") == "step activate failed"
    assert reason_kind("cancelled: ticket 12345") == "cancelled"
    assert reason_kind("") == "unknown"
    assert len(reason_kind("x" * 500)) == 60
    assert order_type_of({"orderType": "add+delete"}) == "add+delete"
    assert order_type_of({}) == "unspecified"


def test_the_service_ordering_saga_engine_reports_to_the_platform_metrics(tmp_path: Path) -> None:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))
    observer = build_service_ordering(platform).engine.observer
    assert isinstance(observer, SagaMetrics)
    assert observer.metrics is platform.metrics  # what /metrics of that process exposes


def test_the_order_type_is_the_orders_item_actions() -> None:
    def order(*actions: str) -> dict[str, Any]:
        return {"productOrderItem": [{"id": str(n), "action": a} for n, a in enumerate(actions)]}

    assert order_type(order("add", "add")) == "add"
    assert order_type(order("delete", "add")) == "add+delete"
    assert order_type(order()) == "none"


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REPLY_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(tracing.TracingSettings(), component="test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


async def test_each_step_is_a_span_in_the_replys_trace_covering_its_latency(
    toy: Toy, spans: InMemorySpanExporter
) -> None:
    await toy.start("s-1")
    [reserve] = [e for _, e in toy.sink.sent if e.event_type == "Reserve"]
    toy.clock.advance(2.5)
    reply = replace(reserve.caused("ReserveDone", {}), traceparent=f"00-{TRACE_ID}-{REPLY_SPAN_ID}-01")
    async with toy.database.transaction() as tx:
        assert (await toy.engine.handle_reply(tx, reply)).applied

    [span] = [s for s in spans.get_finished_spans() if s.name == "saga toy reserve execute"]
    assert span.kind is SpanKind.INTERNAL
    assert (span.end_time or 0) - (span.start_time or 0) == 2_500_000_000  # command sent → reply handled
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == REPLY_SPAN_ID
    assert dict(span.attributes or {})["strowger.saga_id"] == "s-1"
