"""SOM on a real database with FAKE executors that answer the fulfilment contract.

The executors (ROM, activation, inventory) are simulated here: they read the
commands SOM's outbox would publish (only what committed) and answer them as
``components/contract.py`` says, or fail, or stay silent, as a test asks.
Time is a fake clock, so timeouts and backoffs are exact and instant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strowger.components import contract
from strowger.components.decomposition import Catalog
from strowger.components.ordering.consumers import product_order_reference
from strowger.components.sample_catalog import sample_documents
from strowger.components.service_ordering.saga import FulfilmentTimings, fulfilment_saga
from strowger.components.service_ordering.service import (
    ORDER,
    VIEW_TABLES,
    ServiceOrdering,
    service_order_id_for,
)
from strowger.errors import InvalidStateTransition, NotFound
from strowger.events.envelope import Category, Envelope
from strowger.saga import SAGA_TABLES, OperatorAction, RetryPolicy, SagaEngine, SagaRegistry, SagaStatus
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import open_event_store
from strowger.tmf.query import ResourceQuery

pytestmark = pytest.mark.integration

TIMINGS = FulfilmentTimings(
    timeout=timedelta(seconds=30),
    action_retry=RetryPolicy(max_attempts=3, backoff=timedelta(seconds=2), retry_refusals=True),
    compensation_retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=2)),
)
KINDS = {kind.name: kind for kind in contract.ALL_COMMANDS}
SO_EVENTS = ("ServiceOrderCreateEvent", "ServiceOrderStateChangeEvent")


@dataclass
class Clock:
    now: datetime = datetime(2025, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeSink:
    """What SOM's outbox would publish: recorded only when the transaction commits."""

    sent: list[tuple[str, Envelope]] = field(default_factory=list)

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        tx.on_commit(lambda: self.sent.append((topic, envelope)))

    def commands(self) -> list[Envelope]:
        return [envelope for _, envelope in self.sent if envelope.category is Category.COMMAND]

    def of(self, event_type: str) -> list[Envelope]:
        return [envelope for _, envelope in self.sent if envelope.event_type == event_type]

    def order_states(self) -> list[str]:
        return [str(e.payload["serviceOrder"]["state"]) for e in self.of("ServiceOrderStateChangeEvent")]


@dataclass
class FakeExecutors:
    """ROM, activation and inventory as the contract describes them; behaviour set per command.

    ``plan[command] = [outcome, ...]`` is consumed one per command received; an
    outcome is ``ok``, ``fail`` (retryable), ``permanent`` or ``silent`` (no reply).
    """

    plan: dict[str, list[str]] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)
    answered: int = 0

    def reply(self, command: Envelope) -> Envelope | None:
        self.received[command.event_type] += 1
        kind = KINDS[command.event_type]
        outcomes = self.plan.get(command.event_type) or []
        outcome = outcomes.pop(0) if outcomes else "ok"
        if outcome == "silent":
            return None
        if outcome in ("fail", "permanent"):
            body = contract.failure(f"{kind.name} refused by the fake", permanent=outcome == "permanent")
            return command.caused(kind.failed, body)
        return command.caused(kind.succeeded, self._success(command))

    @staticmethod
    def _success(command: Envelope) -> dict[str, Any]:
        payload = command.payload
        if command.event_type == "AllocateResources":
            allocations = [
                {
                    "ref": r["ref"],
                    "poolType": r["poolType"],
                    "pool": f"{r['poolType']}-pool",
                    "value": f"v-{i}",
                }
                for i, r in enumerate(payload["resources"])
            ]
            return {
                "resourceOrder": {"id": f"RO-{payload['requestId']}", "state": "completed"},
                "allocations": allocations,
            }
        return {"requestId": payload["requestId"], "serviceOrderId": payload["serviceOrderId"]}


@dataclass
class Harness:
    database: Database
    sink: FakeSink
    clock: Clock
    executors: FakeExecutors
    som: ServiceOrdering
    seen: int = 0  # commands already handed to the executors

    def new_som(self) -> ServiceOrdering:
        """Another orchestrator process on the same database (after a crash)."""
        return build_som(self.database, self.sink, self.clock)

    async def order_in_progress(self, order_id: str = "PO-1", **extra: Any) -> Envelope:
        """COM's signal: the product order is valid and in progress."""
        product_order = {
            "id": order_id,
            "href": f"/tmf-api/productOrderingManagement/v4/productOrder/{order_id}",
            "state": "inProgress",
            "productOrderItem": [
                {"id": "1", "action": "add", "state": "inProgress", "productOffering": {"id": "PO-FIBRE-500"}}
            ],
            "relatedParty": [{"id": "CUST-1", "role": "Customer"}],
            "billingAccount": {"id": "BA-1"},
            **extra,
        }
        event = Envelope(
            event_type="ProductOrderStateChangeEvent",
            payload={"productOrder": product_order},
            entity_key=order_id,
            correlation_id=f"corr-{order_id}",
        )
        async with self.database.transaction() as tx:
            await self.som.on_product_order(tx, event)
        return event

    async def cancel_from_com(self, order_id: str = "PO-1") -> None:
        task = {
            "id": "T-1",
            "state": "accepted",  # what COM's CancelProductOrderCreateEvent carries (v4 TaskStateType)
            "productOrder": {"id": order_id},
            "cancellationReason": "changed mind",
        }
        event = Envelope(
            event_type="CancelProductOrderCreateEvent",
            payload={"cancelProductOrder": task},
            entity_key=order_id,
        )
        async with self.database.transaction() as tx:
            await self.som.on_product_order_cancellation(tx, event)

    def pending(self) -> list[Envelope]:
        commands = self.sink.commands()
        fresh, self.seen = commands[self.seen :], len(commands)
        return fresh

    async def deliver(self, reply: Envelope, som: ServiceOrdering | None = None) -> bool:
        async with self.database.transaction() as tx:
            return (await (som or self.som).on_reply(tx, reply)).applied

    async def run(self, rounds: int = 20) -> None:
        """Let the executors answer every command sent, and the ones those replies cause."""
        for _ in range(rounds):
            fresh = self.pending()
            if not fresh:
                return
            for command in fresh:
                reply = self.executors.reply(command)
                if reply is not None:
                    await self.deliver(reply)
        raise AssertionError("the saga kept sending commands")

    async def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        async with self.database.transaction() as tx:
            await self.som.tick(tx)

    async def saga_status(self, order_id: str = "PO-1") -> SagaStatus:
        async with self.database.transaction() as tx:
            return (await self.som.engine.get(tx, service_order_id_for(order_id))).status

    async def service_order(self, order_id: str = "PO-1") -> dict[str, Any]:
        return await self.som.get(service_order_id_for(order_id))

    def command_types(self) -> list[str]:
        return [command.event_type for command in self.sink.commands()]


def build_som(database: Database, sink: FakeSink, clock: Clock) -> ServiceOrdering:
    catalog = Catalog.from_documents(sample_documents())

    async def read_catalog(tx: Transaction) -> Catalog:
        return catalog

    engine = SagaEngine(
        SagaRegistry([fulfilment_saga(TIMINGS)]), sink, clock=clock, producer="service-ordering"
    )
    return ServiceOrdering(database, open_event_store(database), sink, engine, read_catalog, clock=clock)


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue(f"{request.param}_db")
    return db


@pytest.fixture
async def harness(database: Database) -> Harness:
    await database.create_tables(SAGA_TABLES, VIEW_TABLES, open_event_store(database).tables)
    sink, clock = FakeSink(), Clock()
    return Harness(database, sink, clock, FakeExecutors(), build_som(database, sink, clock))


CORE = pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)


# --- happy path --------------------------------------------------------------------------------------


@CORE
async def test_a_product_order_in_progress_is_fulfilled_and_completed(harness: Harness) -> None:
    await harness.order_in_progress()
    created = harness.sink.of("ServiceOrderCreateEvent")
    assert len(created) == 1
    order = created[0].payload["serviceOrder"]
    assert order["state"] == "acknowledged"
    assert product_order_reference(order) == ("PO-1", ["1"])  # exactly what COM reads
    assert {item["service"]["serviceSpecification"]["id"] for item in order["serviceOrderItem"]} == {
        "SS-RFS-ACCESS-LINE",
        "SS-RFS-IP-ACCESS",
        "SS-CFS-FIBRE-INTERNET",
    }

    await harness.run()

    assert harness.command_types() == ["AllocateResources", "ActivateService", "RecordInventory"]
    assert harness.sink.order_states() == ["inProgress", "completed"]
    assert await harness.saga_status() is SagaStatus.COMPLETED
    final = await harness.service_order()
    assert final["state"] == "completed" and final["completionDate"]
    assert {item["state"] for item in final["serviceOrderItem"]} == {"completed"}
    # the correlation id of the product order runs through every command and notification
    assert {e.correlation_id for _, e in harness.sink.sent} == {"corr-PO-1"}
    listed = await harness.som.list(ORDER, ResourceQuery())
    assert [item["state"] for item in listed.items] == ["completed"]


@CORE
async def test_a_service_order_is_read_as_of_a_past_time_by_replay(harness: Harness) -> None:
    await harness.order_in_progress()
    in_progress_at = datetime.now(UTC)  # the store stamps events with the real clock, not the fake one
    await harness.run()
    order_id = service_order_id_for("PO-1")
    assert (await harness.som.get(order_id))["state"] == "completed"
    then = await harness.som.get(order_id, as_of=in_progress_at)
    assert then["state"] == "inProgress" and "completionDate" not in then
    with pytest.raises(NotFound):
        await harness.som.get(order_id, as_of=in_progress_at - timedelta(days=1))


async def test_commands_carry_the_contract_payloads(harness: Harness) -> None:
    await harness.order_in_progress()
    await harness.run()
    allocate, activate, record = harness.sink.commands()
    so_id = service_order_id_for("PO-1")
    assert allocate.payload["serviceOrderId"] == so_id and allocate.payload["productOrderId"] == "PO-1"
    assert {r["poolType"] for r in allocate.payload["resources"]} == {"olt-port", "cpe", "vlan", "ipv4"}
    assert allocate.payload["requestId"] == f"{so_id}/allocate/action"
    # activation gets what ROM allocated
    assert [a["value"] for a in activate.payload["allocations"]] == ["v-0", "v-1", "v-2", "v-3"]
    assert activate.payload["steps"][0] == {
        "operation": "allocate",
        "target": "1/SS-RFS-ACCESS-LINE/RS-OLT-PORT",
        "specId": "RS-OLT-PORT",
    }
    assert record.payload["customerId"] == "CUST-1"
    assert {s["state"] for s in record.payload["services"]} == {"active"}
    assert sorted(r["value"] for r in record.payload["resources"]) == ["v-0", "v-1", "v-2", "v-3"]
    topics = [topic for topic, e in harness.sink.sent if e.category is Category.COMMAND]
    assert topics == ["oss.resource.commands", "oss.activation.commands", "oss.inventory.commands"]


async def test_a_redelivered_order_event_starts_nothing_twice(harness: Harness) -> None:
    await harness.order_in_progress()
    await harness.order_in_progress()
    assert len(harness.sink.of("ServiceOrderCreateEvent")) == 1
    assert harness.command_types() == ["AllocateResources"]


# --- failures and compensation -------------------------------------------------------------------------

UNDO = {
    "AllocateResources": "ReleaseResources",
    "ActivateService": "DeactivateService",
    "RecordInventory": "RemoveInventory",
}
FORWARD = ["AllocateResources", "ActivateService", "RecordInventory"]


@pytest.mark.parametrize("failing", FORWARD)
async def test_a_permanent_failure_compensates_in_reverse_and_fails_the_order(
    harness: Harness, failing: str
) -> None:
    harness.executors.plan[failing] = ["permanent"]
    await harness.order_in_progress()
    await harness.run()

    done = FORWARD[: FORWARD.index(failing)]
    expected = [*done, failing, *[UNDO[step] for step in reversed(done)]]
    assert harness.command_types() == expected  # the failed step is not undone: it did nothing
    assert harness.executors.received[failing] == 1  # permanent: never retried
    assert await harness.saga_status() is SagaStatus.FAILED
    assert harness.sink.order_states() == ["inProgress", "failed"]
    final = await harness.service_order()
    assert "refused by the fake" in final["errorMessage"]["reason"]
    failed_event = harness.sink.of("ServiceOrderStateChangeEvent")[-1]
    assert product_order_reference(failed_event.payload["serviceOrder"])[0] == "PO-1"


async def test_a_transient_failure_is_retried_after_its_backoff(harness: Harness) -> None:
    harness.executors.plan["ActivateService"] = ["fail"]
    await harness.order_in_progress()
    await harness.run()
    assert harness.command_types() == ["AllocateResources", "ActivateService"]  # waiting to retry
    await harness.tick(1)
    assert harness.command_types() == ["AllocateResources", "ActivateService"]  # backoff not over
    await harness.tick(2)
    await harness.run()
    assert harness.command_types() == [
        "AllocateResources",
        "ActivateService",
        "ActivateService",
        "RecordInventory",
    ]
    assert harness.sink.order_states() == ["inProgress", "completed"]


async def test_a_silent_executor_times_out_and_the_saga_compensates_what_may_have_happened(
    harness: Harness,
) -> None:
    harness.executors.plan["ActivateService"] = ["silent", "silent", "silent"]
    await harness.order_in_progress()
    await harness.run()
    for _ in range(3):  # each attempt times out (30 s), then waits its backoff
        await harness.tick(31)
        await harness.run()
        await harness.tick(10)
        await harness.run()
    assert harness.executors.received["ActivateService"] == 3
    # the activation may have happened: it is undone before the allocation
    assert harness.command_types()[-2:] == ["DeactivateService", "ReleaseResources"]
    assert harness.sink.order_states() == ["inProgress", "failed"]


async def test_a_stuck_compensation_quarantines_and_an_operator_retry_finishes_it(harness: Harness) -> None:
    harness.executors.plan["ActivateService"] = ["permanent"]
    harness.executors.plan["ReleaseResources"] = ["permanent"]
    await harness.order_in_progress()
    await harness.run()
    assert await harness.saga_status() is SagaStatus.QUARANTINED
    assert harness.sink.order_states() == ["inProgress"]  # not failed while resources are unknown
    assert harness.sink.of("SagaQuarantinedEvent")

    saga_id = service_order_id_for("PO-1")
    async with harness.database.transaction() as tx:
        await harness.som.operate(
            tx, saga_id, OperatorAction.RETRY, actor="alice", reason="pool fixed, INC-7"
        )
    await harness.run()

    assert harness.executors.received["ReleaseResources"] == 2
    assert await harness.saga_status() is SagaStatus.FAILED
    assert harness.sink.order_states() == ["inProgress", "failed"]
    rows = await harness.database.fetchall(
        "SELECT actor, action, reason FROM saga_audit WHERE saga_id = ?", (saga_id,)
    )
    assert [tuple(row) for row in rows] == [("alice", "retry", "pool fixed, INC-7")]


async def test_an_operator_abort_fails_the_service_order_with_the_reason(harness: Harness) -> None:
    harness.executors.plan["ActivateService"] = ["silent"]
    await harness.order_in_progress()
    await harness.run()
    async with harness.database.transaction() as tx:
        await harness.som.operate(
            tx, service_order_id_for("PO-1"), OperatorAction.ABORT, actor="bob", reason="done by hand"
        )
    assert harness.sink.order_states() == ["inProgress", "failed"]
    assert "done by hand" in (await harness.service_order())["errorMessage"]["reason"]


# --- cancellation ----------------------------------------------------------------------------------------


async def test_cancellation_in_flight_compensates_and_confirms_cancelled(harness: Harness) -> None:
    await harness.order_in_progress()
    allocate = harness.pending()
    await harness.deliver(harness.executors.reply(allocate[0]))  # type: ignore[arg-type]
    # ActivateService is in flight when COM asks to cancel
    await harness.cancel_from_com()
    assert harness.sink.order_states() == ["inProgress", "assessingCancellation"]
    await harness.run()  # the activation still succeeds: it is undone first, then the allocation

    assert harness.command_types() == [
        "AllocateResources",
        "ActivateService",
        "DeactivateService",
        "ReleaseResources",
    ]
    assert await harness.saga_status() is SagaStatus.CANCELLED
    assert harness.sink.order_states() == [
        "inProgress",
        "assessingCancellation",
        "pendingCancellation",
        "cancelled",
    ]
    final = await harness.service_order()
    assert final["cancellationReason"] == "changed mind"
    tasks = [
        e.payload["cancelServiceOrder"]["state"]
        for e in harness.sink.of("CancelServiceOrderStateChangeEvent")
    ]
    assert tasks == ["done"]


async def test_cancel_service_order_task_resource_cancels_the_saga(harness: Harness) -> None:
    await harness.order_in_progress()
    task = await harness.som.cancel(
        {"serviceOrder": {"id": service_order_id_for("PO-1")}, "cancellationReason": "x"}
    )
    assert task["state"] == "inProgress"
    in_progress_at = datetime.now(UTC)  # the store's clock is the real one
    await harness.run()
    assert harness.command_types() == ["AllocateResources", "ReleaseResources"]
    assert (await harness.som.get_task(task["id"]))["state"] == "done"
    assert (await harness.service_order())["state"] == "cancelled"
    then = await harness.som.get_task(task["id"], as_of=in_progress_at)
    assert then["state"] == "inProgress" and then["id"] == task["id"]
    with pytest.raises(NotFound):
        await harness.som.get_task(task["id"], as_of=in_progress_at - timedelta(days=1))


async def test_cancelling_a_completed_order_is_refused(harness: Harness) -> None:
    await harness.order_in_progress()
    await harness.run()
    with pytest.raises(InvalidStateTransition):
        await harness.som.cancel({"serviceOrder": {"id": service_order_id_for("PO-1")}})
    await harness.cancel_from_com()  # from COM: ignored, the completed event already answers it
    assert harness.sink.order_states() == ["inProgress", "completed"]


# --- crash and restart -----------------------------------------------------------------------------------


class Crash(Exception):
    pass


@CORE
async def test_an_orchestrator_killed_mid_saga_resumes_and_sends_nothing_twice(harness: Harness) -> None:
    await harness.order_in_progress()
    [allocate] = harness.pending()
    allocated = harness.executors.reply(allocate)
    assert allocated is not None

    # crash 1: the process dies inside the reply's transaction, after the engine decided
    with pytest.raises(Crash):
        async with harness.database.transaction() as tx:
            await harness.som.on_reply(tx, allocated)
            raise Crash
    assert harness.command_types() == ["AllocateResources"]  # nothing escaped the rolled-back transaction

    # a new process on the same database gets the redelivered reply, and a duplicate of it
    restarted = harness.new_som()
    assert await harness.deliver(allocated, restarted)
    assert not await harness.deliver(allocated, restarted)
    [activate] = harness.pending()

    # crash 2: between steps; yet another process answers the activation
    harness.som = harness.new_som()
    activated = harness.executors.reply(activate)
    assert activated is not None
    assert await harness.deliver(activated)
    assert not await harness.deliver(activated)  # the old process's redelivery: ignored
    await harness.run()

    counts = Counter(harness.command_types())
    assert counts == {"AllocateResources": 1, "ActivateService": 1, "RecordInventory": 1}
    assert harness.sink.order_states() == ["inProgress", "completed"]
    assert len(harness.sink.of("ServiceOrderStateChangeEvent")) == 2


# --- semantic locks --------------------------------------------------------------------------------------


async def test_two_orders_for_the_same_product_run_one_after_the_other(harness: Harness) -> None:
    item = {
        "id": "1",
        "action": "modify",
        "state": "inProgress",
        "productOffering": {"id": "PO-FIBRE-500"},
        "product": {"id": "P-9"},
    }
    await harness.order_in_progress("PO-A", productOrderItem=[item])
    await harness.order_in_progress("PO-B", productOrderItem=[item])
    assert await harness.saga_status("PO-B") is SagaStatus.QUEUED
    assert (await harness.service_order("PO-B"))["state"] == "inProgress"
    await harness.run()
    assert await harness.saga_status("PO-A") is SagaStatus.COMPLETED
    assert await harness.saga_status("PO-B") is SagaStatus.COMPLETED
    assert harness.command_types().count("ActivateService") == 2
