"""The saga engine's contract on a real database, subclassed for SQLite and PostgreSQL.

A toy 3-step saga (reserve → activate → bill, each with a compensation) is
driven through the engine with a fake command sink and simulated replies.
The sink records a command only when the transaction commits, as the outbox does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strowger.errors import ConcurrencyConflict, InvalidStateTransition, NotFound
from strowger.events.envelope import Category, Envelope
from strowger.saga import (
    SAGA_TABLES,
    Call,
    Command,
    RetryPolicy,
    SagaDefinition,
    SagaEngine,
    SagaOperator,
    SagaQueries,
    SagaRegistry,
    SagaState,
    SagaStatus,
    SagaStore,
    Step,
    StepContext,
    StepStatus,
)
from strowger.store.db import Database, Transaction

TIMEOUT = timedelta(seconds=10)


def command(event_type: str) -> Any:
    def build(context: StepContext) -> Command:
        payload = {"request": {"id": context.request_id, "service": context.data["service"]}}
        return Command("oss.toy.commands", event_type, payload)

    return build


def call(action: str, retry: RetryPolicy) -> Call:
    return Call(command(action), f"{action}Done", f"{action}Failed", timeout=TIMEOUT, retry=retry)


ACTION_RETRY = RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1))
COMPENSATION_RETRY = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1))
STEP_NAMES = ("reserve", "activate", "bill")
UNDO = {"reserve": "Release", "activate": "Deactivate", "bill": "Credit"}
DO = {"reserve": "Reserve", "activate": "Activate", "bill": "Bill"}


def outcome(state: SagaState) -> Command:
    return Command("oss.toy.events", f"ToySaga{state.status.value.title()}", {"saga": {"id": state.saga_id}})


TOY = SagaDefinition(
    "toy",
    steps=tuple(
        Step(name, call(DO[name], ACTION_RETRY), call(UNDO[name], COMPENSATION_RETRY)) for name in STEP_NAMES
    ),
    lock_keys=lambda data: [f"service:{data['service']}"],
    on_finished=outcome,
)


@dataclass
class FakeSink:
    """Records what would reach the bus: only what committed, like the outbox."""

    sent: list[tuple[str, Envelope]] = field(default_factory=list)

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        tx.on_commit(lambda: self.sent.append((topic, envelope)))

    def types(self) -> list[str]:
        return [envelope.event_type for _, envelope in self.sent]

    def commands(self) -> list[str]:
        return [e.event_type for _, e in self.sent if e.category is Category.COMMAND]

    def last(self, event_type: str) -> Envelope:
        return [e for _, e in self.sent if e.event_type == event_type][-1]


@dataclass
class Clock:
    now: datetime = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Harness:
    database: Database
    sink: FakeSink
    clock: Clock
    engine: SagaEngine

    def new_engine(self) -> SagaEngine:
        """Another orchestrator process on the same database (after a crash)."""
        store = SagaStore(row_locks=self.engine.store.row_locks)
        return SagaEngine(SagaRegistry([TOY]), self.sink, store=store, clock=self.clock)

    async def start(self, saga_id: str = "saga-1", service: str = "svc-1") -> SagaState:
        async with self.database.transaction() as tx:
            return await self.engine.start(
                tx, "toy", {"service": service, "order": {"id": "order-1"}}, saga_id=saga_id
            )

    async def reply(self, to: str, suffix: str = "Done", **payload: Any) -> bool:
        """Answer the last command of type ``to`` with ``<to><suffix>``."""
        reply = self.sink.last(to).caused(f"{to}{suffix}", payload or {"result": {"ok": True}})
        async with self.database.transaction() as tx:
            return (await self.engine.handle_reply(tx, reply)).applied

    async def get(self, saga_id: str = "saga-1") -> SagaState:
        async with self.database.transaction() as tx:
            return await self.engine.get(tx, saga_id)

    async def tick(self) -> None:
        async with self.database.transaction() as tx:
            await self.engine.tick(tx)

    async def operator(self, action: str, saga_id: str = "saga-1", reason: str = "ticket 42") -> SagaState:
        async with self.database.transaction() as tx:
            method = getattr(SagaOperator(self.engine), action)
            state: SagaState = await method(tx, saga_id, actor="alice", reason=reason)
            return state

    async def step_statuses(self, saga_id: str = "saga-1") -> dict[str, str]:
        state = await self.get(saga_id)
        return {step.name: step.status.value for step in state.steps}


def statuses(**by_step: StepStatus) -> Mapping[str, str]:
    return {name: status.value for name, status in by_step.items()}


class SagaContract:
    @pytest.fixture
    def database(self) -> Database:
        raise NotImplementedError

    @pytest.fixture
    def row_locks(self) -> bool:
        """Whether the backend orders its saga row locks (``SagaStore(row_locks=...)``)."""
        return False

    @pytest.fixture
    async def harness(self, database: Database, row_locks: bool) -> Harness:
        await database.create_tables(SAGA_TABLES)
        sink, clock = FakeSink(), Clock()
        store = SagaStore(row_locks=row_locks)
        return Harness(database, sink, clock, SagaEngine(SagaRegistry([TOY]), sink, store=store, clock=clock))

    async def test_happy_path_runs_every_step_in_order(self, harness: Harness) -> None:
        state = await harness.start()
        assert state.status is SagaStatus.RUNNING
        assert harness.sink.commands() == ["Reserve"]
        assert await harness.reply("Reserve", result={"port": "p7"})
        assert await harness.reply("Activate")
        assert await harness.reply("Bill")
        state = await harness.get()
        assert state.status is SagaStatus.COMPLETED
        assert harness.sink.commands() == ["Reserve", "Activate", "Bill"]
        assert harness.sink.types()[-1] == "ToySagaCompleted"
        assert state.results()["reserve"] == {"result": {"port": "p7"}}
        activate = harness.sink.last("Activate")
        assert activate.category is Category.COMMAND
        assert activate.correlation_id == "saga-1"
        assert activate.payload["request"]["id"] == "saga-1/activate/action"
        async with harness.database.transaction() as tx:
            history = await harness.engine.store.history(tx, "saga-1")
            assert await harness.engine.store.lock_holder(tx, "service:svc-1") == ""
        assert [line.after for line in history if not line.step] == ["running", "completed"]

    async def test_the_command_is_caused_by_the_reply_that_triggered_it(self, harness: Harness) -> None:
        await harness.start()
        reserved = harness.sink.last("Reserve").caused("ReserveDone", {})
        async with harness.database.transaction() as tx:
            await harness.engine.handle_reply(tx, reserved)
        assert harness.sink.last("Activate").causation_id == reserved.event_id

    @pytest.mark.parametrize("failing", [0, 1, 2])
    async def test_a_failed_step_compensates_the_completed_ones_in_reverse(
        self, harness: Harness, failing: int
    ) -> None:
        await harness.start()
        for name in STEP_NAMES[:failing]:
            assert await harness.reply(DO[name])
        assert await harness.reply(DO[STEP_NAMES[failing]], "Failed", error="no capacity")
        expected = [UNDO[name] for name in reversed(STEP_NAMES[:failing])]
        for undo in expected:
            assert await harness.reply(undo)
        state = await harness.get()
        assert state.status is SagaStatus.FAILED
        assert "no capacity" in state.reason
        sent = harness.sink.commands()
        assert sent[failing + 1 :] == expected
        assert state.steps[failing].status is StepStatus.FAILED
        assert all(state.steps[i].status is StepStatus.COMPENSATED for i in range(failing))
        assert harness.sink.types()[-1] == "ToySagaFailed"

    async def test_a_compensation_that_keeps_failing_quarantines_then_operator_retry_finishes(
        self, harness: Harness
    ) -> None:
        await harness.start()
        await harness.reply("Reserve")
        await harness.reply("Activate", "Failed", error="port down")
        for _ in range(3):
            assert await harness.reply("Release", "Failed", error="inventory unreachable")
            harness.clock.advance(5)
            await harness.tick()  # the retry backoff elapses: the compensation is sent again
        state = await harness.get()
        assert state.status is SagaStatus.QUARANTINED
        assert harness.sink.commands().count("Release") == 3
        assert harness.sink.types()[-1] == "SagaQuarantinedEvent"
        async with harness.database.snapshot() as tx:
            [report] = await SagaQueries().quarantined(tx)
        assert report.saga_id == "saga-1"
        assert report.data["order"] == {"id": "order-1"}
        assert report.succeeded_steps == ("reserve",)
        assert report.stuck_step == "reserve"
        assert len(report.stuck_errors) == 3 and "inventory unreachable" in report.stuck_errors[-1]
        async with harness.database.transaction() as tx:  # the resource stays locked while quarantined
            assert await harness.engine.store.lock_holder(tx, "service:svc-1") == "saga-1"

        state = await harness.operator("retry", reason="inventory is back")
        assert state.status is SagaStatus.COMPENSATING
        assert await harness.reply("Release")
        state = await harness.get()
        assert state.status is SagaStatus.FAILED
        assert state.steps[0].status is StepStatus.COMPENSATED
        async with harness.database.transaction() as tx:
            [audit] = await harness.engine.store.audit_trail(tx, "saga-1")
        assert (audit.actor, audit.action, audit.reason) == ("alice", "retry", "inventory is back")
        assert (audit.status_before, audit.status_after) == ("quarantined", "compensating")

    async def test_operator_skip_force_complete_and_abort_are_audited(self, harness: Harness) -> None:
        await harness.start("skip")
        state = await harness.operator("skip", "skip", reason="reserved by hand")
        assert state.steps[0].status is StepStatus.SKIPPED
        assert harness.sink.commands()[-1] == "Activate"
        state = await harness.operator("force_complete", "skip", reason="activated by hand")
        assert state.status is SagaStatus.COMPLETED
        assert [s.status for s in state.steps] == [StepStatus.SKIPPED] * 3

        await harness.start("abort", service="svc-2")
        await harness.reply("Reserve")
        state = await harness.operator("abort", "abort", reason="customer gone")
        assert state.status is SagaStatus.ABORTED
        assert not await harness.reply("Activate")  # replies after the end change nothing
        async with harness.database.transaction() as tx:
            skip_trail = await harness.engine.store.audit_trail(tx, "skip")
            abort_trail = await harness.engine.store.audit_trail(tx, "abort")
            assert await harness.engine.store.lock_holder(tx, "service:svc-2") == ""
        assert [(a.action, a.actor) for a in skip_trail] == [("skip", "alice"), ("force-complete", "alice")]
        assert [a.action for a in abort_trail] == ["abort"]

    async def test_invalid_operator_actions_are_refused_and_change_nothing(self, harness: Harness) -> None:
        await harness.start()
        await harness.reply("Reserve")
        await harness.reply("Activate")
        await harness.reply("Bill")
        for action in ("retry", "skip", "force_complete", "compensate", "abort"):
            with pytest.raises(InvalidStateTransition, match="completed"):
                await harness.operator(action)
        async with harness.database.transaction() as tx:
            with pytest.raises(InvalidStateTransition, match="can no longer be cancelled"):
                await harness.engine.cancel(tx, "saga-1", "too late")
        with pytest.raises(InvalidStateTransition, match="actor and a reason"):
            await harness.operator("abort", reason=" ")
        with pytest.raises(NotFound):
            await harness.operator("abort", saga_id="nope")
        async with harness.database.transaction() as tx:
            assert await harness.engine.store.audit_trail(tx, "saga-1") == []

    async def test_operator_compensate_undoes_a_running_saga(self, harness: Harness) -> None:
        await harness.start()
        await harness.reply("Reserve")
        await harness.reply("Activate")
        state = await harness.operator("compensate", reason="wrong product")
        assert state.status is SagaStatus.COMPENSATING  # waits for the bill step in flight
        await harness.reply("Bill", "Failed")
        await harness.reply("Deactivate")
        await harness.reply("Release")
        assert (await harness.get()).status is SagaStatus.FAILED
        assert harness.sink.commands() == ["Reserve", "Activate", "Bill", "Deactivate", "Release"]

    async def test_duplicate_and_late_replies_are_ignored(self, harness: Harness) -> None:
        await harness.start()
        first = harness.sink.last("Reserve").caused("ReserveDone", {})
        async with harness.database.transaction() as tx:
            assert (await harness.engine.handle_reply(tx, first)).applied
        async with harness.database.transaction() as tx:
            duplicate = await harness.engine.handle_reply(tx, first)
        assert not duplicate.applied and "already succeeded" in duplicate.reason
        assert not await harness.reply("Reserve", "Failed")  # late failure for a step already past
        assert harness.sink.commands() == ["Reserve", "Activate"]
        async with harness.database.transaction() as tx:
            stranger = Envelope("ReserveDone", {}, "x", causation_id="unknown-command")
            assert not (await harness.engine.handle_reply(tx, stranger)).applied
            wrong_type = harness.sink.last("Activate").caused("SomethingElse", {})
            assert not (await harness.engine.handle_reply(tx, wrong_type)).applied
        assert await harness.step_statuses() == statuses(
            reserve=StepStatus.SUCCEEDED, activate=StepStatus.IN_FLIGHT, bill=StepStatus.PENDING
        )

    async def test_a_stale_failure_of_an_earlier_attempt_is_ignored(self, harness: Harness) -> None:
        await harness.start()
        first_attempt = harness.sink.last("Reserve")
        harness.clock.advance(11)
        await harness.tick()  # timed out: retry scheduled after the backoff
        harness.clock.advance(2)
        await harness.tick()  # attempt 2 sent
        assert harness.sink.commands() == ["Reserve", "Reserve"]
        async with harness.database.transaction() as tx:
            stale = first_attempt.caused("ReserveFailed", {"error": "late"})
            assert not (await harness.engine.handle_reply(tx, stale)).applied
        state = await harness.get()
        assert state.steps[0].status is StepStatus.IN_FLIGHT and state.steps[0].attempts == 2
        async with harness.database.transaction() as tx:  # but its late success counts (same request id)
            assert (await harness.engine.handle_reply(tx, first_attempt.caused("ReserveDone", {}))).applied
        assert harness.sink.commands()[-1] == "Activate"

    async def test_a_step_timeout_retries_then_fails_and_compensates_uncertain_work(
        self, harness: Harness
    ) -> None:
        await harness.start()
        await harness.reply("Reserve")
        harness.clock.advance(11)
        await harness.tick()
        assert (await harness.get()).steps[1].status is StepStatus.RETRY_WAIT
        harness.clock.advance(2)
        await harness.tick()
        assert harness.sink.commands() == ["Reserve", "Activate", "Activate"]
        harness.clock.advance(11)
        await harness.tick()  # second timeout: attempts exhausted
        state = await harness.get()
        assert state.status is SagaStatus.COMPENSATING
        assert state.steps[1].status is StepStatus.COMPENSATING
        assert state.steps[1].timeouts == 2 and len(state.steps[1].errors) == 2
        async with harness.database.transaction() as tx:
            history = await harness.engine.store.history(tx, "saga-1")
        assert ("activate", "in_flight", "uncertain") in [(h.step, h.before, h.after) for h in history]
        assert "no reply within" in state.reason
        # An unanswered activation may have happened: it is undone too, before the reservation.
        assert harness.sink.commands()[-1] == "Deactivate"
        await harness.reply("Deactivate")
        await harness.reply("Release")
        assert (await harness.get()).status is SagaStatus.FAILED

    async def test_a_new_engine_resumes_a_saga_without_repeating_a_step(self, harness: Harness) -> None:
        await harness.start()
        await harness.reply("Reserve")
        activate = harness.sink.last("Activate")

        class Crash(Exception):
            pass

        with pytest.raises(Crash):  # the process dies while handling the reply: nothing commits
            async with harness.database.transaction() as tx:
                await harness.engine.handle_reply(tx, activate.caused("ActivateDone", {}))
                raise Crash
        assert harness.sink.commands() == ["Reserve", "Activate"]

        harness.engine = harness.new_engine()  # restarted; the reply is redelivered
        assert await harness.reply("Activate")
        assert not await harness.reply("Activate")  # and once more: a duplicate
        await harness.reply("Bill")
        assert (await harness.get()).status is SagaStatus.COMPLETED
        assert harness.sink.commands() == ["Reserve", "Activate", "Bill"]

    async def test_a_saga_waits_for_the_lock_another_holds_then_starts(self, harness: Harness) -> None:
        await harness.start("first", service="svc-1")
        second = await harness.start("second", service="svc-1")
        other = await harness.start("other", service="svc-9")
        assert second.status is SagaStatus.QUEUED
        assert other.status is SagaStatus.RUNNING
        assert harness.sink.commands() == ["Reserve", "Reserve"]
        async with harness.database.transaction() as tx:
            history = await harness.engine.store.history(tx, "second")
        assert "held by saga first" in history[0].reason

        reserve_first = harness.sink.sent[0][1]
        async with harness.database.transaction() as tx:
            await harness.engine.handle_reply(tx, reserve_first.caused("ReserveFailed", {}))
        assert (await harness.get("first")).status is SagaStatus.FAILED
        assert (await harness.get("second")).status is SagaStatus.RUNNING
        assert harness.sink.last("Reserve").payload["request"]["id"] == "second/reserve/action"
        async with harness.database.transaction() as tx:
            assert await harness.engine.store.lock_holder(tx, "service:svc-1") == "second"

    async def test_a_queued_saga_that_waits_too_long_is_reported_stuck_once(self, harness: Harness) -> None:
        await harness.start("first")
        await harness.start("second")
        harness.clock.advance(5)
        await harness.tick()
        assert "SagaStuckEvent" not in harness.sink.types()
        harness.clock.advance(60)
        await harness.tick()  # first: reserve timed out; second: queued for too long
        await harness.tick()
        stuck = [e for _, e in harness.sink.sent if e.event_type == "SagaStuckEvent"]
        assert [e.payload["saga"]["id"] for e in stuck] == ["second"]
        assert stuck[0].category is Category.SYSTEM
        assert harness.sink.sent[-1][0] == "ops.system.events"

    async def test_cancel_waits_for_the_step_in_flight_and_compensates_it_if_it_succeeds(
        self, harness: Harness
    ) -> None:
        await harness.start()
        await harness.reply("Reserve")
        async with harness.database.transaction() as tx:
            state = await harness.engine.cancel(tx, "saga-1", "customer changed their mind")
        assert state.status is SagaStatus.COMPENSATING
        assert harness.sink.commands() == ["Reserve", "Activate"]  # nothing new while activate is in flight
        async with harness.database.transaction() as tx:  # a duplicate cancel is harmless
            await harness.engine.cancel(tx, "saga-1", "again")
        assert await harness.reply("Activate")  # it succeeded after all: undo it, then the reservation
        assert harness.sink.commands()[-1] == "Deactivate"
        await harness.reply("Deactivate")
        await harness.reply("Release")
        state = await harness.get()
        assert state.status is SagaStatus.CANCELLED
        assert "customer changed their mind" in state.reason
        assert harness.sink.commands() == ["Reserve", "Activate", "Deactivate", "Release"]
        assert harness.sink.types()[-1] == "ToySagaCancelled"
        async with harness.database.transaction() as tx:  # cancelling again changes nothing
            assert (await harness.engine.cancel(tx, "saga-1", "again")).status is SagaStatus.CANCELLED
        assert harness.sink.commands() == ["Reserve", "Activate", "Deactivate", "Release"]

    async def test_cancel_in_flight_when_the_step_then_fails(self, harness: Harness) -> None:
        await harness.start()
        await harness.reply("Reserve")
        async with harness.database.transaction() as tx:
            await harness.engine.cancel(tx, "saga-1", "customer request")
        await harness.reply("Activate", "Failed")
        await harness.reply("Release")
        assert (await harness.get()).status is SagaStatus.CANCELLED
        assert harness.sink.commands() == ["Reserve", "Activate", "Release"]

    async def test_starting_twice_with_the_same_id_starts_once(self, harness: Harness) -> None:
        await harness.start()
        again = await harness.start()
        assert again.status is SagaStatus.RUNNING
        assert harness.sink.commands() == ["Reserve"]

    async def test_concurrent_saves_of_one_saga_conflict(self, harness: Harness) -> None:
        before = await harness.start()
        async with harness.database.transaction() as tx:
            await harness.engine.store.save(tx, before, before, None)
        with pytest.raises(ConcurrencyConflict):
            async with harness.database.transaction() as tx:
                await harness.engine.store.save(tx, before, before, None)

    async def test_the_sagas_a_batch_of_replies_answers_are_found_and_locked(self, harness: Harness) -> None:
        await harness.start("saga-1", service="svc-1")
        await harness.start("saga-2", service="svc-2")
        reserves = [envelope for _, envelope in harness.sink.sent if envelope.event_type == "Reserve"]
        replies = [reserve.caused("ReserveDone", {}) for reserve in reversed(reserves)]
        causes = [reply.causation_id for reply in replies] + ["not-a-command", ""]
        async with harness.database.transaction() as tx:
            sagas = await harness.engine.store.sagas_of_commands(tx, causes)
            assert sorted(sagas) == ["saga-1", "saga-2"]
            await harness.engine.store.lock(tx, sagas)
            for reply in replies:
                assert (await harness.engine.handle_reply(tx, reply)).applied
        assert harness.sink.commands().count("Activate") == 2

    async def test_operations_queries(self, harness: Harness) -> None:
        for index in range(3):
            await harness.start(f"done-{index}", service=f"s{index}")
            for name in STEP_NAMES:
                harness.clock.advance(index + 1)
                await harness.reply(DO[name])
        await harness.start("busy", service="busy")
        await harness.start("broken", service="broken")
        await harness.reply("Reserve")
        await harness.reply("Activate", "Failed", error="port down")
        async with harness.database.snapshot() as tx:
            queries = SagaQueries()
            in_flight = await queries.in_flight_by_step(tx)
            durations = await queries.durations(tx, "toy")
            compensations = await queries.compensation_counts(tx)
        assert {(c.saga_status, c.step, c.step_status, c.count) for c in in_flight} == {
            ("running", "reserve", "in_flight", 1),
            ("compensating", "reserve", "compensating", 1),
        }
        assert (durations.count, durations.p50, durations.p99, durations.max) == (3, 6.0, 9.0, 9.0)
        assert [(c.saga_type, c.count) for c in compensations] == [("toy", 1)]
        assert "port down" in compensations[0].reason
