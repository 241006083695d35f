"""The consumer runtime: the ONE place that decodes, filters, dedups, retries, parks,
dead-letters and acknowledges. Handlers only apply an event; they never ack.

For each batch a :class:`ConsumerRunner` fetched, in ONE database transaction:

1. a type the consumer does not want (``eventType`` header) → acknowledged, not decoded;
2. not decodable → dead-lettered at once with the reason (never blocks its key);
3. already in the inbox → no-op (a redelivery);
4. an earlier event of the same entity is parked or dead → stored behind it;
5. otherwise the handler runs, with the inbox row: a failure rolls back that
   message alone, which is then dead-lettered (PermanentError) or parked for
   retry with backoff (anything else).

Steps 3 to 5 run batched (one inbox query, one parking-lot query, one inbox
insert per batch) and without a savepoint per message; only when a handler
fails is the batch redone message by message, each inside a SAVEPOINT
(:meth:`ConsumerRunner.process`). docs/benchmarks.md has the figures.

A consumer may also give a *prepare* step: awaited with the batch's decoded, valid
events BEFORE its transaction opens, so it may do slow I/O without holding the
database (the hub POSTs webhooks there and parks only what did not get a 2xx). Its
result reaches the handlers as ``uow.prepared``. It may run again for the same events
(the transaction failed, a redelivery), so what it does must be safe to repeat; if it
raises, the batch is applied without it.

A consumer may give a *batch handler* instead of (or beside) a per-event one:
the fast path then hands it every event to apply in one call, so it can write
its effects with one ``executemany``. If it raises, the batch is redone one
event at a time through the same batch handler (a one-event batch each), so
retries, parking and dead letters are exactly those of a per-event handler.

The transaction commits (effects, inbox rows, outbox rows, parked rows), and
only then are the deliveries acknowledged: at-least-once, and the inbox makes
the redelivery after a crash harmless. A retry task in the same runner applies
parked heads when due, and the rows behind them in order.

Observability (docs/operations-observability.md, "Pipeline instrumentation"), each
switchable per runner so benches can measure with and without:

* ``validator``: every decoded event is checked against its schema before its
  handler; an invalid one is dead-lettered at once with error type
  ``SchemaViolation`` (the validation dead-letter queue); emitted events are
  checked before they reach the outbox.
* ``tracing`` (default: on while spans are exported, :func:`tracing.exporting`):
  each per-event handler call runs in a CONSUMER span whose parent is the
  message's traceparent, and the events it emits get a traceparent of their own
  PRODUCER span, children of it. With export off a span is only cost (over
  100 µs each, docs/operations-observability.md), so emitted events then keep
  the trace their cause named (``Envelope.caused`` copies it).
* ``timeline``: one trace hop per applied, parked or dead event, written in the
  batch's transaction (a hop exists iff the work committed).
* ``observer``: told after commit what was applied, failed, dead-lettered (metrics).

Between batches a runner gives the event loop a turn, and with a ``pacer``
(:mod:`strowger.bus.pacing`, the platform's) waits while HTTP requests of the same
process are owed their share of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strowger.bus.observe import (
    APPLIED,
    DUPLICATE,
    NULL_OBSERVER,
    PipelineObserver,
    emitted_traceparent,
    is_null,
)
from strowger.bus.pacing import LoopPacer
from strowger.bus.port import Bus, Delivery, Subscriber
from strowger.errors import MalformedMessage, SchemaViolation, is_transient
from strowger.events.envelope import Envelope, Message, decode, encode
from strowger.events.validation import SchemaValidator
from strowger.ops import tracing
from strowger.ops.trace_timeline import TRACE_TABLES, Hop, Outcome, TraceRecorder, produced_at_of
from strowger.store.db import Database, Transaction
from strowger.store.deadletters import PARKED_TABLES, Failure, ParkedMessage, ParkingLot, Status, now
from strowger.store.inbox import INBOX_TABLES, Inbox
from strowger.store.outbox import OUTBOX_TABLES, Outbox

log = logging.getLogger("strowger.runtime")

DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 5.0, 30.0)
LOOP_STOP_RECHECK = 1.0  # seconds between cancels of a runner loop that has not stopped


class AckPolicy(enum.Enum):
    """When a batch is acknowledged to the bus."""

    AFTER_COMMIT = "after-commit"
    """At-least-once (default): after the handler's transaction committed; redeliveries are absorbed
    by the inbox."""

    ON_RECEIPT = "on-receipt"
    """At-most-once: before handling; a crash mid-batch loses that batch. Only for messages where a
    duplicate is worse than a loss (and the inbox is still written)."""


@dataclass(frozen=True, slots=True)
class UnitOfWork:
    """What a handler works with: the open transaction, the outbox, and the delivery's metadata.

    For a batch handler, ``deliveries`` are the batch's deliveries in the order of its
    envelopes and ``delivery`` is the last of them; for a per-event handler ``deliveries``
    is ``(delivery,)``.
    """

    tx: Transaction
    consumer: str
    delivery: Delivery
    outbox: Outbox
    deliveries: Sequence[Delivery] = ()
    traced: bool = False  # stamp emitted events with a PRODUCER span (child of the handler's span)
    validator: SchemaValidator | None = None  # check emitted events against their schema
    prepared: object = None  # what the consumer's prepare step returned for this batch (or None)

    async def emit(self, envelope: Envelope, topic: str) -> None:
        """Publish ``envelope`` on ``topic`` if, and only if, this unit of work commits.

        Raises SchemaViolation (nothing written) if the event does not match its schema.
        """
        await self.emit_many([envelope], topic)

    async def emit_many(self, envelopes: Sequence[Envelope], topic: str) -> None:
        """Publish ``envelopes`` on ``topic`` (one outbox insert) if, and only if, this work commits."""
        producer, traced, validator = self.consumer, self.traced, self.validator
        messages = [
            encode_emitted(envelope, topic, producer=producer, traced=traced, validator=validator)
            for envelope in envelopes
        ]
        await self.outbox.add(self.tx, messages)


def encode_emitted(
    envelope: Envelope,
    topic: str,
    *,
    producer: str,
    traced: bool = True,
    validator: SchemaValidator | None = None,
) -> Message:
    """``envelope`` as it goes into the outbox, encoded for ``topic``: its producer named, its own
    PRODUCER span's traceparent (``traced``), checked against its schema (raises SchemaViolation).

    Every emitter calls it: :class:`UnitOfWork` here, and the platform's ``OutboxSink``. The
    TMF body is built once, for the check and the message alike.
    """
    traceparent = envelope.traceparent
    if traced or not traceparent:  # untraced, an event still joins (or starts) a trace
        traceparent = emitted_traceparent(envelope, topic)
    if traceparent != envelope.traceparent or not envelope.producer:  # one copy for both
        envelope = envelope.evolve(traceparent=traceparent, producer=envelope.producer or producer)
    body = envelope.to_tmf()
    if validator is not None:
        validator.check(envelope, body)
    return encode(envelope, topic, body=body)


Handler = Callable[[Envelope, UnitOfWork], Awaitable[None]]
BatchHandler = Callable[[Sequence[Envelope], UnitOfWork], Awaitable[None]]
Prepare = Callable[[Sequence[tuple[Delivery, Envelope]]], Awaitable[object]]


class _SlowPathNeeded(Exception):
    """The fast path met a handler failure (or an undecodable message): redo the batch carefully."""

    def __init__(self, delivery: Delivery | None, error: BaseException | None, seconds: float = 0.0) -> None:
        super().__init__("a handler failed in the batch fast path")
        self.delivery = delivery
        self.error = error
        self.seconds = seconds


@dataclass(slots=True)
class _BatchLog:
    """What one batch transaction did, for the timeline (written in it) and the observer (after it).

    Only filled for what the runner records: nothing is appended when neither is on.
    """

    hops: list[Hop] = field(default_factory=list)
    applied: list[tuple[Delivery, Envelope, float]] = field(default_factory=list)
    duplicates: list[tuple[Delivery, Envelope]] = field(default_factory=list)
    failed: list[tuple[Delivery, Envelope, float, BaseException]] = field(default_factory=list)
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    prepared: object = None  # the consumer's prepare result, handed to every unit of work
    checked: dict[int, Envelope] = field(default_factory=dict)  # id(delivery) → decoded and valid


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer group and what it does with each event."""

    name: str  # the consumer group; also the inbox and dead-letter owner
    topics: tuple[str, ...]
    handler: Handler | None = None  # per event; or give batch_handler (at least one of the two)
    event_types: frozenset[str] = frozenset()  # empty: every type
    retry_backoff: tuple[float, ...] = DEFAULT_BACKOFF  # seconds before retry 1, 2, ...; then dead
    batch_size: int = 100
    ack_policy: AckPolicy = AckPolicy.AFTER_COMMIT
    batch_handler: BatchHandler | None = None  # the whole fresh batch in one call (fast path)
    prepare: Prepare | None = None  # I/O before the batch's transaction (see the module docstring)

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError(f"consumer {self.name!r} reads no topic")
        if self.batch_size < 1 or any(delay < 0 for delay in self.retry_backoff):
            raise ValueError(f"consumer {self.name!r}: batch_size >= 1 and backoff delays >= 0")
        if self.handler is None and self.batch_handler is None:
            raise ValueError(f"consumer {self.name!r} has neither a handler nor a batch_handler")

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def wants_message(self, message: Message) -> bool:
        """Whether to decode and handle ``message``, from its headers only (its eventType here)."""
        return self.wants(message.event_type)

    async def apply_one(self, envelope: Envelope, uow: UnitOfWork) -> None:
        """Apply one event: the per-event handler, else the batch handler with a one-event batch."""
        if self.handler is not None:
            await self.handler(envelope, uow)
        else:
            assert self.batch_handler is not None
            await self.batch_handler((envelope,), uow)


@dataclass
class RunnerStats:
    """Counters since the runner started (also useful for metrics)."""

    applied: int = 0
    duplicates: int = 0
    filtered: int = 0
    parked: int = 0
    blocked: int = 0
    dead: int = 0
    retried: int = 0
    batches: int = 0


class ConsumerRunner:
    """Runs one :class:`Consumer` against a bus and a database until cancelled."""

    def __init__(
        self,
        consumer: Consumer,
        bus: Bus,
        database: Database,
        *,
        outbox: Outbox | None = None,
        fetch_timeout: float = 1.0,
        retry_poll_interval: float = 1.0,
        observer: PipelineObserver = NULL_OBSERVER,
        validator: SchemaValidator | None = None,
        tracing: bool | None = None,
        timeline: bool = False,
        create_tables: bool = True,
        pacer: LoopPacer | None = None,
    ) -> None:
        self.consumer = consumer
        self.bus = bus
        self.database = database
        self.outbox = outbox or Outbox()
        self.fetch_timeout = fetch_timeout
        self.retry_poll_interval = retry_poll_interval
        self.stats = RunnerStats()
        self.started = asyncio.Event()  # set once the subscriber has joined its group
        self._inbox = Inbox()
        self._lot = ParkingLot()
        self._retry_wakeup = asyncio.Event()
        self._subscriber: Subscriber | None = None
        self._log = logging.LoggerAdapter(log, {"consumer": consumer.name})
        self.observer = observer
        self.validator = validator
        self.tracing = tracing  # None: while spans are exported
        self.timeline = timeline
        # A platform creates every table before its tasks start; DDL racing live consumers'
        # inserts can deadlock on PostgreSQL, so runners it owns skip it.
        self.create_tables = create_tables
        self._observing = not is_null(observer)
        self._recorder = TraceRecorder()
        self.pacer = pacer  # shares the loop with HTTP requests served by this process

    @property
    def name(self) -> str:
        return self.consumer.name

    @property
    def _postgresql(self) -> bool:
        return self.database.kind == "postgresql"

    async def run(self) -> None:
        """Consume and retry until cancelled; leaves the group (uncommitted work is redelivered) on exit."""
        if self.create_tables:
            tables = (INBOX_TABLES, OUTBOX_TABLES, PARKED_TABLES) + ((TRACE_TABLES,) if self.timeline else ())
            await self.database.create_tables(*tables)
        subscriber = self.bus.subscriber(self.name, self.consumer.topics)
        await subscriber.start()
        self._subscriber = subscriber
        self.started.set()
        loops = [
            asyncio.create_task(self._consume(subscriber), name=f"{self.name}:consume"),
            asyncio.create_task(self._retry_due(), name=f"{self.name}:retry"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise the loop's own error (not a group) for the supervisor's log
        finally:
            await self._stop_loops(loops)
            self.started.clear()
            self._subscriber = None
            await subscriber.stop()

    async def _stop_loops(self, loops: Sequence[asyncio.Task[None]]) -> None:
        """Cancel ``loops`` and wait until each has ended, cancelling again any that carried on.

        A library that drops a cancel (Python 3.11's ``asyncio.wait_for`` does when its result
        arrives in the same loop turn) would otherwise leave a loop running and this runner
        waiting for it forever. What a cancelled batch had not committed is redelivered.
        """
        pending = set(loops)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=LOOP_STOP_RECHECK)
            if pending:
                self._log.warning("%d loop(s) still running after cancel; cancelling again", len(pending))

    # The live path -------------------------------------------------------------------------

    async def _consume(self, subscriber: Subscriber) -> None:
        clock = time.perf_counter
        seconds_per_event = 0.0  # of the last batch, to size the next one while pacing
        while True:
            size = self.consumer.batch_size
            if self.pacer is not None:
                size = self.pacer.batch_size(size, seconds_per_event)
            batch = await subscriber.fetch(size, self.fetch_timeout)
            if batch:
                started = clock()
                waited = await self.process(subscriber, batch)
                if self.pacer is not None:
                    # A prepare step's time is mostly waiting on I/O (the loop serves others
                    # meanwhile): charging it would hold every paced consumer back.
                    seconds = clock() - started - waited
                    seconds_per_event = seconds / len(batch)
                    self.pacer.spent(seconds)
                    await self.pacer.turn()
                else:
                    # SQLite work never suspends, nor does a fetch with a backlog waiting:
                    # without this turn a consumer works off its whole backlog in one go,
                    # and nothing else in the process (HTTP, other consumers) runs meanwhile.
                    await asyncio.sleep(0)

    async def process(self, subscriber: Subscriber, batch: Sequence[Delivery]) -> float:
        """Apply one fetched batch in one transaction, then acknowledge it; seconds spent preparing.

        The fast path checks the inbox and the parking lot once for the whole batch and runs
        the handlers without a savepoint each. If a handler fails (or a message is not
        decodable, or not valid against its schema), that transaction rolls back and the batch
        is applied again message by message with savepoints, reusing the failure seen, so the
        failing handler is not called twice; the handlers before it are (their first effects
        were rolled back). A failed batch handler does not say which event failed: every
        event is redone.
        """
        if self.consumer.ack_policy is AckPolicy.ON_RECEIPT:
            await self._acknowledge(subscriber, batch)
        preparing = time.perf_counter()
        prepared, checked = await self._prepare(batch) if self.consumer.prepare else (None, {})
        prepare_seconds = time.perf_counter() - preparing if self.consumer.prepare else 0.0
        try:
            async with self.database.transaction() as tx:
                done = _BatchLog(prepared=prepared, checked=checked)
                counts = await self._apply_batch(tx, batch, done)
                await self._close_batch(tx, done)
            self._add_counts(counts)
        except _SlowPathNeeded as needed:
            async with self.database.transaction() as tx:
                done = _BatchLog(prepared=prepared)
                for delivery in batch:
                    if delivery is needed.delivery:
                        await self._handle(tx, delivery, done, known_failure=needed)
                    else:
                        await self._handle(tx, delivery, done)
                await self._close_batch(tx, done)
        self.stats.batches += 1
        if self.consumer.ack_policy is AckPolicy.AFTER_COMMIT:
            await self._acknowledge(subscriber, batch)
        return prepare_seconds

    async def _prepare(self, batch: Sequence[Delivery]) -> tuple[object, dict[int, Envelope]]:
        """The consumer's prepare step over the batch's wanted, decodable, valid events.

        The envelopes it saw are returned by delivery so the transaction does not decode
        them again; the others go through the transaction's usual checks (and dead letters).
        """
        assert self.consumer.prepare is not None
        checked: dict[int, Envelope] = {}
        events: list[tuple[Delivery, Envelope]] = []
        for delivery in batch:
            if not self.consumer.wants_message(delivery.message):
                continue
            try:
                envelope = decode(delivery.message)
                if self.validator is not None:
                    self.validator.check_message(delivery.message, envelope)
            except (MalformedMessage, SchemaViolation):
                continue  # dead-lettered in the transaction, with the reason
            checked[id(delivery)] = envelope
            events.append((delivery, envelope))
        if not events:
            return None, checked
        try:
            return await self.consumer.prepare(events), checked
        except Exception:  # the handlers then do without it: nothing is lost, only the shortcut
            self._log.warning("prepare step failed; applying the batch without it", exc_info=True)
            return None, checked

    async def _acknowledge(self, subscriber: Subscriber, batch: Sequence[Delivery]) -> None:
        await subscriber.commit(batch)

    async def _close_batch(self, tx: Transaction, done: _BatchLog) -> None:
        """Write the batch's timeline hops in ``tx``; tell the observer once ``tx`` has committed."""
        if done.hops:
            await self._recorder.record_hops(tx, done.hops)
        if self._observing and (done.applied or done.duplicates or done.failed or done.dead):
            tx.on_commit(lambda: self._report(done))

    def _report(self, done: _BatchLog) -> None:
        observer, name = self.observer, self.name
        try:
            for delivery, envelope, seconds in done.applied:
                observer.handled(name, delivery, envelope, seconds, APPLIED)
            for delivery, envelope in done.duplicates:
                observer.handled(name, delivery, envelope, 0.0, DUPLICATE)
            for delivery, envelope, seconds, error in done.failed:
                observer.failed(name, delivery, envelope, seconds, error)
            for delivery, error_type in done.dead:
                observer.dead_lettered(name, delivery, error_type)
        except Exception:  # an observer must never fail the pipeline (the work has committed)
            self._log.exception("pipeline observer failed")

    def _hop(self, done: _BatchLog, delivery: Delivery, envelope: Envelope, outcome: str) -> None:
        message = delivery.message
        done.hops.append(
            Hop.of(
                envelope,
                topic=message.topic,
                produced_at=produced_at_of(message, envelope),
                consumer=self.name,
                handled_at=datetime.now(UTC),
                outcome=outcome,
            )
        )

    @property
    def traced(self) -> bool:
        return tracing.exporting() if self.tracing is None else self.tracing

    def _uow(
        self, tx: Transaction, delivery: Delivery, deliveries: Sequence[Delivery], prepared: object = None
    ) -> UnitOfWork:
        return UnitOfWork(
            tx, self.name, delivery, self.outbox, deliveries, self.traced, self.validator, prepared
        )

    async def _run_handler(self, envelope: Envelope, uow: UnitOfWork, topic: str) -> None:
        """The per-event handler, in a CONSUMER span when tracing (its emits become its children)."""
        if uow.traced:
            with tracing.consume_span(envelope, self.name, topic):
                await self.consumer.apply_one(envelope, uow)
        else:
            await self.consumer.apply_one(envelope, uow)

    async def _apply_batch(self, tx: Transaction, batch: Sequence[Delivery], done: _BatchLog) -> RunnerStats:
        """The fast path; raises :class:`_SlowPathNeeded` (rolling ``tx`` back) on the first failure."""
        counts = RunnerStats()
        decoded: list[tuple[Delivery, Envelope]] = []
        validator = self.validator
        filtering = bool(self.consumer.event_types)  # most consumers take every type: skip the header
        checked = done.checked
        for delivery in batch:
            known = checked.get(id(delivery)) if checked else None
            if known is not None:  # decoded and checked by the prepare step
                decoded.append((delivery, known))
                continue
            if filtering and not self.consumer.wants_message(delivery.message):
                counts.filtered += 1
                continue
            try:
                envelope = decode(delivery.message)
                if validator is not None:
                    validator.check_message(delivery.message, envelope)
            except (MalformedMessage, SchemaViolation):
                raise _SlowPathNeeded(None, None) from None  # dead-lettered there, counted once
            decoded.append((delivery, envelope))
        ids = list(dict.fromkeys(envelope.event_id for _, envelope in decoded))
        seen = await self._inbox.seen_many(tx, self.name, ids, postgresql=self._postgresql)
        keys = list(dict.fromkeys(envelope.entity_key for _, envelope in decoded))
        blocked = await self._lot.blocked_keys(tx, self.name, keys, postgresql=self._postgresql)
        fresh: list[tuple[Delivery, Envelope]] = []
        for delivery, envelope in decoded:
            if envelope.event_id in seen:
                counts.duplicates += 1
                if self._observing:
                    done.duplicates.append((delivery, envelope))
            elif envelope.entity_key in blocked:
                await self._lot.park(
                    tx, self.name, delivery, entity_key=envelope.entity_key, status=Status.BLOCKED
                )
                counts.blocked += 1
            else:
                seen.add(envelope.event_id)  # a second copy in this batch is a duplicate
                fresh.append((delivery, envelope))
        recorded = await self._inbox.record_many(
            tx, self.name, [e.event_id for _, e in fresh], postgresql=self._postgresql
        )
        to_apply = [(d, e) for d, e in fresh if e.event_id in recorded]
        counts.duplicates += len(fresh) - len(to_apply)  # applied by another member meanwhile
        if self.consumer.batch_handler is not None:
            await self._apply_as_batch(tx, to_apply, done)
        else:
            await self._apply_each(tx, to_apply, done)
        if self.timeline:
            for delivery, envelope in to_apply:
                self._hop(done, delivery, envelope, Outcome.APPLIED)
        counts.applied += len(to_apply)
        return counts

    async def _apply_each(
        self, tx: Transaction, to_apply: Sequence[tuple[Delivery, Envelope]], done: _BatchLog
    ) -> None:
        observing = self._observing
        clock = time.perf_counter
        for delivery, envelope in to_apply:
            uow = self._uow(tx, delivery, (delivery,), done.prepared)
            started = clock() if observing else 0.0
            try:
                await self._run_handler(envelope, uow, delivery.message.topic)
            except Exception as error:
                raise _SlowPathNeeded(delivery, error, clock() - started if observing else 0.0) from error
            if observing:
                done.applied.append((delivery, envelope, clock() - started))

    async def _apply_as_batch(
        self, tx: Transaction, to_apply: Sequence[tuple[Delivery, Envelope]], done: _BatchLog
    ) -> None:
        """One call for the whole batch; a failure does not say which event, so none is skipped.

        No span per event here (one call applies them all); what it emits keeps the trace
        its cause named (``Envelope.caused`` copies the traceparent).
        """
        if not to_apply:
            return
        assert self.consumer.batch_handler is not None
        deliveries = [delivery for delivery, _ in to_apply]
        uow = self._uow(tx, deliveries[-1], deliveries, done.prepared)
        started = time.perf_counter()
        try:
            await self.consumer.batch_handler([envelope for _, envelope in to_apply], uow)
        except Exception as error:
            raise _SlowPathNeeded(None, error) from error
        if self._observing:
            share = (time.perf_counter() - started) / len(to_apply)  # the call's time, split evenly
            done.applied.extend((delivery, envelope, share) for delivery, envelope in to_apply)

    def _add_counts(self, counts: RunnerStats) -> None:
        self.stats.applied += counts.applied
        self.stats.duplicates += counts.duplicates
        self.stats.filtered += counts.filtered
        self.stats.blocked += counts.blocked

    async def _handle(
        self,
        tx: Transaction,
        delivery: Delivery,
        done: _BatchLog,
        *,
        known_failure: _SlowPathNeeded | None = None,
    ) -> None:
        message = delivery.message
        if not self.consumer.wants_message(message):
            self.stats.filtered += 1
            return
        try:
            envelope = decode(message)
        except MalformedMessage as malformed:
            await self._dead_on_arrival(tx, delivery, malformed, None, done)
            return
        if self.validator is not None:
            try:
                self.validator.check_message(message, envelope)
            except SchemaViolation as violation:
                await self._dead_on_arrival(tx, delivery, violation, envelope, done)
                return
        if await self._inbox.seen(tx, self.name, envelope.event_id):
            self.stats.duplicates += 1
            if self._observing:
                done.duplicates.append((delivery, envelope))
            return
        if await self._lot.blocked(tx, self.name, envelope.entity_key, postgresql=self._postgresql):
            await self._lot.park(
                tx, self.name, delivery, entity_key=envelope.entity_key, status=Status.BLOCKED
            )
            self.stats.blocked += 1
            return
        if known_failure is not None and known_failure.error is not None:
            # The fast path already ran this handler, and it failed: do not call it again.
            error: BaseException | None = known_failure.error
            seconds = known_failure.seconds
        else:
            started = time.perf_counter()
            error = await self._apply(tx, envelope, delivery, done.prepared)
            seconds = time.perf_counter() - started
        if error is None:
            if self._observing:
                done.applied.append((delivery, envelope, seconds))
            if self.timeline:
                self._hop(done, delivery, envelope, Outcome.APPLIED)
            return
        if self._observing:
            done.failed.append((delivery, envelope, seconds, error))
        await self._park_failure(tx, delivery, envelope, error, done)

    async def _dead_on_arrival(
        self,
        tx: Transaction,
        delivery: Delivery,
        error: MalformedMessage | SchemaViolation,
        envelope: Envelope | None,
        done: _BatchLog,
    ) -> None:
        """Dead-letter a message no handler may see: not decodable, or not valid against its schema.

        A schema violation keeps its entity key, so the entity's later events wait behind it
        (as behind any permanent failure) instead of being applied out of sequence.
        """
        self._log.warning(
            "dead-lettering %s message at %s/%d@%d: %s",
            "malformed" if envelope is None else "schema-invalid",
            delivery.message.topic,
            delivery.partition,
            delivery.offset,
            error,
        )
        failure = Failure.of(error)
        entity_key = envelope.entity_key if envelope is not None else None
        await self._lot.park(
            tx, self.name, delivery, entity_key=entity_key, status=Status.DEAD, failure=failure
        )
        self.stats.dead += 1
        if self._observing:
            done.dead.append((delivery, failure.error_type))
        if self.timeline and envelope is not None:
            self._hop(done, delivery, envelope, Outcome.DEAD)

    async def _park_failure(
        self, tx: Transaction, delivery: Delivery, envelope: Envelope, error: BaseException, done: _BatchLog
    ) -> None:
        failure = Failure.of(error)
        backoff = self.consumer.retry_backoff
        if is_transient(error) and backoff:
            status, next_at = Status.RETRYING, failure.at + backoff[0]
            self.stats.parked += 1
            self._retry_wakeup.set()
        else:
            status, next_at = Status.DEAD, None
            self.stats.dead += 1
            if self._observing:
                done.dead.append((delivery, failure.error_type))
        if self.timeline:
            self._hop(done, delivery, envelope, Outcome.PARKED if status is Status.RETRYING else Outcome.DEAD)
        self._log.warning(
            "%s %s (%s) of %s: %s: %s",
            "parking" if status is Status.RETRYING else "dead-lettering",
            envelope.event_id,
            envelope.event_type,
            envelope.entity_key,
            failure.error_type,
            failure.message,
        )
        await self._lot.park(
            tx,
            self.name,
            delivery,
            entity_key=envelope.entity_key,
            status=status,
            failure=failure,
            next_attempt_at=next_at,
        )

    async def _apply(
        self, tx: Transaction, envelope: Envelope, delivery: Delivery, prepared: object = None
    ) -> BaseException | None:
        """Run the handler inside a savepoint; returns its error (its effects undone) or None."""
        try:
            async with tx.savepoint("strowger_handler"):
                if await self._inbox.record(tx, self.name, envelope.event_id):
                    uow = self._uow(tx, delivery, (delivery,), prepared)
                    await self._run_handler(envelope, uow, delivery.message.topic)
                    self.stats.applied += 1
                else:
                    self.stats.duplicates += 1
        except Exception as error:
            return error
        return None

    # The retry path ------------------------------------------------------------------------

    async def _retry_due(self) -> None:
        while True:
            due = await self._lot.due(self.database, self.name)
            applied = 0
            for parked_id in due:
                applied += await self.retry(parked_id)
            if applied:
                continue  # the next of an entity's sequence is due now
            await self._lot.promote_stranded(self.database, self.name)
            await self._sleep_until_next_retry()

    async def _sleep_until_next_retry(self) -> None:
        next_at = await self._lot.next_due_at(self.database, self.name)
        delay = self.retry_poll_interval if next_at is None else next_at - now()
        delay = min(self.retry_poll_interval, max(0.05, delay))  # a floor: heads locked elsewhere
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancel (3.11)
                await self._retry_wakeup.wait()
        self._retry_wakeup.clear()

    async def retry(self, parked_id: int) -> int:
        """Try parked head ``parked_id`` once if due; 1 if it was settled (applied or now dead)."""
        async with self.database.transaction() as tx:
            head = await self._lot.claim(tx, parked_id, postgresql=self._postgresql)
            if head is None:
                return 0
            self.stats.retried += 1
            done = _BatchLog()
            delivery = head.delivery()
            try:
                envelope = decode(head.message)
                if self.validator is not None:
                    self.validator.check_message(head.message, envelope)
            except (MalformedMessage, SchemaViolation) as invalid:
                await self._failed_again(tx, head, invalid, delivery, done)
                await self._close_batch(tx, done)
                return 1
            started = time.perf_counter()
            error = await self._apply(tx, envelope, delivery)
            seconds = time.perf_counter() - started
            if error is None:
                await self._lot.resolve(tx, head)
                self._log.info("applied parked %s after %d failed attempts", head.event_id, head.attempts)
                if self._observing:
                    done.applied.append((delivery, envelope, seconds))
                if self.timeline:
                    self._hop(done, delivery, envelope, Outcome.APPLIED)
                await self._close_batch(tx, done)
                return 1
            if self._observing:
                done.failed.append((delivery, envelope, seconds, error))
            status = await self._failed_again(tx, head, error, delivery, done)
            if self.timeline:
                self._hop(done, delivery, envelope, Outcome.DEAD if status is Status.DEAD else Outcome.PARKED)
            await self._close_batch(tx, done)
        return 1 if status is Status.DEAD else 0

    async def _failed_again(
        self, tx: Transaction, head: ParkedMessage, error: BaseException, delivery: Delivery, done: _BatchLog
    ) -> Status:
        failure = Failure.of(error)
        status = await self._lot.failed_again(
            tx, head, failure, self.consumer.retry_backoff, permanent=not is_transient(error)
        )
        if status is Status.DEAD:
            self.stats.dead += 1
            if self._observing:
                done.dead.append((delivery, failure.error_type))
            self._log.error(
                "dead-lettering %s (%s) after %d attempts: %s: %s",
                head.event_id,
                head.event_type,
                head.attempts + 1,
                failure.error_type,
                failure.message,
            )
        return status
