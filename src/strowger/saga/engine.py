"""The saga engine: runs the state machine of :mod:`strowger.saga.model` against the database.

The engine owns no transaction. Every method takes the caller's open
:class:`~strowger.store.db.Transaction` (a consumer handler's, a scheduler's,
an API request's) and sends commands through a :class:`CommandSink` in that
same transaction, i.e. through the outbox: a state change and the commands it
causes commit together or not at all, so a crash at any point leaves either
the old state (the reply is redelivered and handled again) or the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from strowger.errors import NotFound
from strowger.events.envelope import Category, Envelope, encode, new_id, utcnow
from strowger.events.topics import SYSTEM_EVENTS
from strowger.saga import model
from strowger.saga.definition import SagaDefinition, SagaRegistry, StepContext
from strowger.saga.model import Decision, NewId, Role, SagaState, SagaStatus, Send
from strowger.saga.store import CommandRecord, SagaStore, read_time
from strowger.store.db import Transaction
from strowger.store.outbox import Outbox

log = logging.getLogger("strowger.saga")

Decide = Callable[[SagaState, SagaDefinition, datetime, NewId], Decision]

SAGA_STUCK = "SagaStuckEvent"
SAGA_QUARANTINED = "SagaQuarantinedEvent"


class CommandSink(Protocol):
    """Where the engine sends commands and events: normally the outbox, in the caller's transaction."""

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        """Send ``envelope`` on ``topic`` if, and only if, ``tx`` commits."""


class OutboxSink:
    """The production :class:`CommandSink`: rows in the transactional outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        await self._outbox.add(tx, [encode(envelope, topic)])


class SagaObserver(Protocol):
    """Told what sagas did, once the transaction that did it has committed (metrics, in ops/).

    Called on the event loop: an observer must be quick and must not raise.
    """

    def step_replied(
        self, state: SagaState, step: str, role: Role, latency: timedelta, reply: Envelope
    ) -> None:
        """``reply`` was applied; ``latency`` runs from its command's send to the reply's handling."""

    def compensation_started(self, state: SagaState) -> None:
        """The saga began to compensate (``state.reason`` says why)."""

    def saga_finished(self, state: SagaState) -> None:
        """The saga reached a terminal status (``state.finished_at`` is set)."""


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What :meth:`SagaEngine.handle_reply` did with a reply."""

    applied: bool
    saga_id: str = ""
    reason: str = ""  # why it was ignored (unknown command, duplicate, late, unexpected type)
    state: SagaState | None = None  # the saga as saved, when the reply was applied


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one :meth:`SagaEngine.tick` did."""

    advanced: tuple[str, ...] = ()  # sagas moved by a deadline (retry sent, timeout handled)
    stuck: tuple[str, ...] = ()  # sagas reported stuck
    sent: int = 0


@dataclass
class _Effects:
    sent: int = 0
    woken: list[str] = field(default_factory=list)


class SagaEngine:
    """Starts sagas, applies replies, cancels, and moves sagas whose deadlines passed."""

    def __init__(
        self,
        registry: SagaRegistry,
        sink: CommandSink,
        *,
        store: SagaStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        ids: NewId = new_id,
        producer: str = "strowger.saga",
        system_topic: str = SYSTEM_EVENTS.name,
        tick_limit: int = 100,
        observer: SagaObserver | None = None,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.store = store or SagaStore()
        self.clock = clock
        self.ids = ids
        self.producer = producer
        self.system_topic = system_topic
        self.tick_limit = tick_limit
        self.observer = observer

    # --- public API ------------------------------------------------------------------------------

    async def start(
        self,
        tx: Transaction,
        saga_type: str,
        data: Mapping[str, Any],
        *,
        saga_id: str = "",
        correlation_id: str = "",
        entity_key: str = "",
        cause: Envelope | None = None,
    ) -> SagaState:
        """Start a saga (or queue it behind the sagas holding its locks).

        Idempotent by ``saga_id``: starting an existing saga returns it
        unchanged, so a redelivered order event starts nothing twice.
        """
        saga_id = saga_id or self.ids()
        existing = await self.store.load(tx, saga_id)
        if existing is not None:
            return existing
        definition = self.registry.get(saga_type)
        now = self.clock()
        keys = tuple(dict.fromkeys(definition.lock_keys(data)))
        correlation_id = correlation_id or (cause.correlation_id if cause else "") or saga_id
        state = model.new_saga(
            definition,
            saga_id,
            data,
            now,
            correlation_id=correlation_id,
            entity_key=entity_key,
            lock_keys=keys,
        )
        blocker = await self.store.try_lock(tx, saga_id, keys, now)
        if blocker:
            holder = await self.store.lock_holder(tx, blocker)
            await self.store.wait_for(tx, saga_id, keys, now)
            decision = model.queue(state, now, f"waiting for lock {blocker} held by saga {holder}")
        else:
            decision = model.start(state, definition, now, self.ids)
        return await self._apply(tx, definition, None, decision, cause)

    async def handle_reply(self, tx: Transaction, reply: Envelope) -> ReplyResult:
        """Apply a reply event; its ``causation_id`` must be the id of the command it answers.

        A reply to no saga command, a duplicate, a late reply for a step
        already past, or a stale failure of an earlier attempt changes nothing.
        """
        record = await self.store.find_command(tx, reply.causation_id) if reply.causation_id else None
        if record is None:
            return ReplyResult(False, reason="not a reply to a saga command")
        state = await self._load(tx, record.saga_id)
        definition = self.registry.get(state.saga_type)
        call = definition.call(record.step, record.role is Role.COMPENSATION)
        if reply.event_type not in (call.succeeded, call.failed):
            reason = f"{reply.event_type} is neither {call.succeeded} nor {call.failed}"
            log.warning("saga %s: unexpected reply ignored: %s", state.saga_id, reason)
            await self._log_ignored(tx, state, record, reason)
            return ReplyResult(False, state.saga_id, reason)
        decision = model.on_reply(
            state,
            definition,
            self.clock(),
            self.ids,
            step=record.step,
            role=record.role,
            command_id=record.command_id,
            succeeded=reply.event_type == call.succeeded,
            detail=_reply_detail(reply),
            result=dict(reply.payload),
            permanent=reply.payload.get("permanent") is True,
        )
        if decision.ignored:
            await self._log_ignored(tx, state, record, f"{reply.event_type} ignored: {decision.ignored}")
            return ReplyResult(False, state.saga_id, decision.ignored)
        after = await self._apply(tx, definition, state, decision, reply)
        sent_at = await self._sent_at(tx, state, record, call.timeout) if self.observer else None
        if self.observer is not None and sent_at is not None:
            latency = max(self.clock() - sent_at, timedelta(0))
            name, observer = definition.steps[record.step].name, self.observer
            tx.on_commit(lambda: observer.step_replied(after, name, record.role, latency, reply))
        return ReplyResult(True, state.saga_id, state=after)

    async def cancel(
        self, tx: Transaction, saga_id: str, reason: str, *, cause: Envelope | None = None
    ) -> SagaState:
        """Cancel in flight: compensate what was done (idempotent; InvalidStateTransition once ended)."""
        return await self.transition(
            tx, saga_id, lambda s, d, now, ids: model.cancel(s, d, now, ids, reason), cause=cause
        )

    async def tick(self, tx: Transaction, now: datetime | None = None) -> TickReport:
        """Handle overdue replies and due retries, then report sagas that stopped moving.

        Called periodically by a scheduler task, each call in its own transaction.
        """
        now = now or self.clock()
        advanced: list[str] = []
        sent = 0
        for saga_id in await self.store.due(tx, now, self.tick_limit):
            state = await self._load(tx, saga_id)
            definition = self.registry.get(state.saga_type)
            decision = model.on_deadline(state, definition, now, self.ids)
            if decision.changed:
                await self._apply(tx, definition, state, decision, None, now=now)
                advanced.append(saga_id)
                sent += len(decision.sends)
        stuck = []
        for saga_id in await self.store.stale(tx, now, self.tick_limit):
            state = await self._load(tx, saga_id)
            await self._emit_system(tx, SAGA_STUCK, state, f"no transition since {state.updated_at}")
            await self.store.mark_stuck_reported(tx, saga_id)
            stuck.append(saga_id)
            log.warning("saga %s (%s) is stuck in %s", saga_id, state.saga_type, state.status)
        return TickReport(tuple(advanced), tuple(stuck), sent)

    async def get(self, tx: Transaction, saga_id: str) -> SagaState:
        """The saga's current state; NotFound if there is none."""
        return await self._load(tx, saga_id)

    async def transition(
        self, tx: Transaction, saga_id: str, decide: Decide, *, cause: Envelope | None = None
    ) -> SagaState:
        """Apply one decision function of :mod:`strowger.saga.model` to a saga (used by operators)."""
        state = await self._load(tx, saga_id)
        definition = self.registry.get(state.saga_type)
        decision = decide(state, definition, self.clock(), self.ids)
        return await self._apply(tx, definition, state, decision, cause)

    # --- applying a decision ---------------------------------------------------------------------

    async def _load(self, tx: Transaction, saga_id: str) -> SagaState:
        state = await self.store.load(tx, saga_id)
        if state is None:
            raise NotFound(f"no saga {saga_id!r}")
        return state

    async def _apply(
        self,
        tx: Transaction,
        definition: SagaDefinition,
        before: SagaState | None,
        decision: Decision,
        cause: Envelope | None,
        *,
        now: datetime | None = None,
    ) -> SagaState:
        """Persist a decision with the commands and events it causes, in ``tx``."""
        if before is not None and not decision.changed:
            return before
        now = now or self.clock()
        stale = model.stale_at(decision.state, definition)
        if before is None:
            await self.store.insert(tx, decision.state, stale)
            state = decision.state
        else:
            state = await self.store.save(tx, before, decision.state, stale)
        await self.store.append_log(tx, state.saga_id, decision.log, now)
        for send in decision.sends:
            await self._send(tx, definition, state, send, cause, now)
        was = before.status if before else None
        self._observe(tx, was, state)
        if state.status is SagaStatus.QUARANTINED and was is not SagaStatus.QUARANTINED:
            await self._emit_system(tx, SAGA_QUARANTINED, state, state.reason)
            log.error("saga %s quarantined: %s", state.saga_id, state.reason)
        if state.status.terminal and (was is None or not was.terminal):
            await self._finish(tx, definition, state, cause)
        return state

    async def _sent_at(
        self, tx: Transaction, state: SagaState, record: CommandRecord, timeout: timedelta
    ) -> datetime | None:
        """When the command a reply answers was sent, for the step latency metric.

        The awaited command's reply deadline is its send time + timeout, so the usual reply costs
        no query; the reply to an earlier attempt (late, after a retry) reads its send time.
        """
        step = state.steps[record.step]
        awaited = step.status in (model.StepStatus.IN_FLIGHT, model.StepStatus.COMPENSATING)
        if awaited and step.command_id == record.command_id and step.deadline is not None:
            return step.deadline - timeout
        row = await tx.fetchone(
            "SELECT sent_at FROM saga_commands WHERE command_id = ?", (record.command_id,)
        )
        return read_time(row[0]) if row else None

    def _observe(self, tx: Transaction, was: SagaStatus | None, state: SagaState) -> None:
        observer = self.observer
        if observer is None or state.status is was:
            return
        if state.status is SagaStatus.COMPENSATING and was in (SagaStatus.RUNNING, SagaStatus.QUEUED):
            tx.on_commit(lambda: observer.compensation_started(state))
        if state.status.terminal and (was is None or not was.terminal):
            tx.on_commit(lambda: observer.saga_finished(state))

    async def _send(
        self,
        tx: Transaction,
        definition: SagaDefinition,
        state: SagaState,
        send: Send,
        cause: Envelope | None,
        now: datetime,
    ) -> None:
        step = definition.steps[send.step]
        call = definition.call(send.step, send.role is Role.COMPENSATION)
        request_id = f"{state.saga_id}/{step.name}/{send.role}"
        context = StepContext(
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            step=step.name,
            attempt=send.attempt,
            request_id=request_id,
            data=state.data,
            results=state.results(),
            correlation_id=state.correlation_id,
            entity_key=state.entity_key,
        )
        command = call.command(context)
        envelope = Envelope(
            event_type=command.event_type,
            payload=command.payload,
            entity_key=command.entity_key or state.entity_key,
            category=Category.COMMAND,
            event_id=send.command_id,
            correlation_id=state.correlation_id,
            causation_id=cause.event_id if cause else "",
            traceparent=cause.traceparent if cause else "",
            producer=self.producer,
            extra={"sagaId": state.saga_id, "sagaStep": step.name, "requestId": request_id},
        )
        await self.sink.emit(tx, envelope, command.topic)
        record = CommandRecord(send.command_id, state.saga_id, send.step, send.role, send.attempt)
        await self.store.record_command(tx, record, command.event_type, command.topic, now)

    async def _finish(
        self, tx: Transaction, definition: SagaDefinition, state: SagaState, cause: Envelope | None
    ) -> None:
        """A saga ended: announce it, release its locks and start the sagas queued behind them."""
        if definition.on_finished is not None:
            outcome = definition.on_finished(state)
            if outcome is not None:
                envelope = Envelope(
                    event_type=outcome.event_type,
                    payload=outcome.payload,
                    entity_key=outcome.entity_key or state.entity_key,
                    correlation_id=state.correlation_id,
                    causation_id=cause.event_id if cause else "",
                    traceparent=cause.traceparent if cause else "",
                    producer=self.producer,
                )
                await self.sink.emit(tx, envelope, outcome.topic)
        released = await self.store.release_locks(tx, state.saga_id)
        if released:
            await self._wake(tx, released, cause)

    async def _wake(self, tx: Transaction, keys: list[str], cause: Envelope | None) -> None:
        """Start, first come first served, the queued sagas that can now take all their locks."""
        now = self.clock()
        for saga_id in await self.store.waiting_on(tx, keys):
            state = await self.store.load(tx, saga_id)
            if state is None or state.status is not SagaStatus.QUEUED:
                continue
            if await self.store.try_lock(tx, saga_id, state.lock_keys, now):
                continue  # still blocked by another key
            await self.store.stop_waiting(tx, saga_id)
            definition = self.registry.get(state.saga_type)
            await self._apply(tx, definition, state, model.start(state, definition, now, self.ids), cause)

    async def _emit_system(self, tx: Transaction, event_type: str, state: SagaState, reason: str) -> None:
        step = state.current_step
        payload = {
            "saga": {
                "id": state.saga_id,
                "sagaType": state.saga_type,
                "status": state.status.value,
                "step": step.name,
                "stepStatus": step.status.value,
                "errors": list(step.errors),
                "reason": reason,
                "lastTransition": state.updated_at.isoformat(),
            }
        }
        envelope = Envelope(
            event_type=event_type,
            payload=payload,
            entity_key=state.entity_key,
            category=Category.SYSTEM,
            correlation_id=state.correlation_id,
            producer=self.producer,
        )
        await self.sink.emit(tx, envelope, self.system_topic)

    async def _log_ignored(
        self, tx: Transaction, state: SagaState, record: CommandRecord, reason: str
    ) -> None:
        # Kept in the saga's history so a trace shows every reply, even the ones that changed nothing.
        step = state.steps[record.step].name
        line = model.Transition(
            step, state.steps[record.step].status, state.steps[record.step].status, reason
        )
        await self.store.append_log(tx, state.saga_id, [line], self.clock())


def _reply_detail(reply: Envelope) -> str:
    """A short human reason from a reply: an error/reason field, the description, or its type."""
    for source in (reply.payload, reply.resource()):
        for key in ("error", "reason", "message", "description"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return reply.description or reply.event_type
