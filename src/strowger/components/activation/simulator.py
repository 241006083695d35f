"""The network activation simulator: executes ``ActivateService`` / ``DeactivateService``.

It stands in for the network (OLTs, BNGs, HLR...) so the whole fulfilment flow
runs end to end, with realistic latency and failures injected on demand
(:mod:`strowger.components.activation.faults`).

Latency without holding a transaction. The consumer runtime calls handlers
inside the batch's database transaction; sleeping there would hold SQLite's
single write lock (and a PostgreSQL connection) for the whole latency. So the
handler only *records* the request (``activation_request``, status ``pending``,
``due_at`` = now + latency + jitter) and a scheduler task (:meth:`run`) executes
due requests later, each in a short transaction of its own that configures the
network element, marks the request done and writes the reply to the outbox.
With no latency configured the handler executes at once, in its own transaction.

Idempotency, keyed by the command's ``requestId`` (not its id: the saga retries
with a new command id and the same ``requestId``):

* a request already executed answers again with its recorded reply (a
  transient failure is executed again instead: that is what the saga's retry
  is for); one still pending is re-pointed at the latest attempt, so the
  eventual reply answers the command the saga now waits for;
* each step's configuration is one row of ``network_element_config`` keyed by
  (request id, step): configuring twice changes nothing, and a rollback marks
  exactly that request's rows ``rolledBack`` (twice: nothing more);
* a rollback that overtakes its activation (still pending, or not received yet)
  cancels it: the activation will then configure nothing and fail permanently.

Every reply is built with ``command.caused(...)`` and goes on ``oss.service.events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from strowger.components.activation.faults import (
    ActivationSettings,
    InjectedFault,
    Step,
    activation_fault,
    latency_of,
    rollback_fault,
)
from strowger.components.contract import ACTIVATE_SERVICE, DEACTIVATE_SERVICE, SERVICE_EVENTS, failure
from strowger.errors import PermanentError
from strowger.events.envelope import Category, Envelope
from strowger.settings import load_section
from strowger.store.db import Database, TableSet, Transaction
from strowger.tmf.resources import EventSink

log = logging.getLogger("strowger.activation")

Clock = Callable[[], float]

ACTIVATION_TABLES = TableSet(
    "activation",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS activation_request (
            request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
            due_at REAL NOT NULL, command TEXT NOT NULL, reply TEXT,
            transient INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)""",
        """CREATE INDEX IF NOT EXISTS activation_request_due
            ON activation_request (due_at) WHERE status = 'pending'""",
        """CREATE TABLE IF NOT EXISTS network_element_config (
            request_id TEXT NOT NULL, step INTEGER NOT NULL, element TEXT NOT NULL, operation TEXT NOT NULL,
            spec_id TEXT NOT NULL, service_order_id TEXT NOT NULL, state TEXT NOT NULL,
            changed_at REAL NOT NULL, PRIMARY KEY (request_id, step))""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS activation_request (
            request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
            due_at DOUBLE PRECISION NOT NULL, command TEXT NOT NULL, reply TEXT,
            transient BOOLEAN NOT NULL DEFAULT FALSE, updated_at DOUBLE PRECISION NOT NULL)""",
        """CREATE INDEX IF NOT EXISTS activation_request_due
            ON activation_request (due_at) WHERE status = 'pending'""",
        """CREATE TABLE IF NOT EXISTS network_element_config (
            request_id TEXT NOT NULL, step INTEGER NOT NULL, element TEXT NOT NULL, operation TEXT NOT NULL,
            spec_id TEXT NOT NULL, service_order_id TEXT NOT NULL, state TEXT NOT NULL,
            changed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (request_id, step))""",
    ],
)

PENDING, SUCCEEDED, FAILED, CANCELLED = "pending", "succeeded", "failed", "cancelled"
CONFIGURED, ROLLED_BACK = "configured", "rolledBack"
_BATCH = 100
_SELECT_DUE = """SELECT request_id, kind, command FROM activation_request
    WHERE status = ? AND due_at <= ? ORDER BY due_at LIMIT ?"""
_DUE = {  # PostgreSQL: two schedulers (two processes) never execute the same request
    "sqlite": _SELECT_DUE,
    "postgresql": _SELECT_DUE + " FOR UPDATE SKIP LOCKED",
}


class MalformedCommand(PermanentError):
    """A command body does not follow components/contract.py."""


@dataclass(frozen=True)
class ElementConfig:
    """One step configured on a simulated network element."""

    request_id: str
    step: int
    element: str
    operation: str
    spec_id: str
    service_order_id: str
    state: str

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "element": self.element,
            "operation": self.operation,
            "specId": self.spec_id,
            "state": self.state,
        }


class NetworkSimulator:
    """Executes activation commands against simulated network elements stored in ``database``."""

    def __init__(
        self,
        database: Database,
        event_sink: EventSink,
        settings: ActivationSettings | None = None,
        *,
        rng: random.Random | None = None,
        clock: Clock = time.time,
        poll_interval: float = 1.0,
    ) -> None:
        self.database = database
        self.sink = event_sink
        self.settings = settings or load_section(ActivationSettings)
        self.rng = rng or random.Random()
        self.clock = clock
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()

    def configure(self, **changes: Any) -> ActivationSettings:
        """Change latency or faults at run time (validated; unknown names raise ``ValidationError``)."""
        self.settings = self.settings.changed(changes)
        log.info("activation simulator reconfigured", extra={"settings": self.settings.model_dump()})
        return self.settings

    async def ensure_tables(self) -> None:
        await self.database.create_tables(ACTIVATION_TABLES)

    # The command side (inside the consumer's transaction) ----------------------------------

    async def handle(self, tx: Transaction, command: Envelope) -> None:
        """Record ``command``; execute it now if the network has no latency, else when due."""
        try:
            request_id = _text(
                command.payload.get("requestId") or command.extra.get("requestId"), "requestId"
            )
            kind = _kind_of(command)
            _parse(kind, command)
        except MalformedCommand as error:
            failed = ACTIVATE_SERVICE if command.event_type == ACTIVATE_SERVICE.name else DEACTIVATE_SERVICE
            await self._reply(tx, command.caused(failed.failed, failure(str(error), permanent=True)))
            return
        row = await tx.fetchone(
            "SELECT status, reply, transient FROM activation_request WHERE request_id = ?", (request_id,)
        )
        delay = latency_of(self.settings, self.rng)
        if row is None:
            await self._record(tx, request_id, kind, command, delay)
        elif row[0] == PENDING:  # a retry while the network is still busy: answer the latest attempt
            await self._repoint(tx, request_id, command)
            return
        elif row[0] == FAILED and row[2]:  # a transient failure: the retry runs it again
            await self._rearm(tx, request_id, command, delay)
        else:  # executed (or cancelled) before: the same outcome, answering this command
            await self._reply(tx, _replayed(command, row[1]))
            return
        if delay <= 0:
            await self._execute(tx, request_id, kind, command)
        else:
            tx.on_commit(self._wakeup.set)

    async def _record(
        self, tx: Transaction, request_id: str, kind: str, command: Envelope, delay: float
    ) -> None:
        now = self.clock()
        await tx.execute(
            """INSERT INTO activation_request (request_id, kind, status, due_at, command, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (request_id, kind, PENDING, now + delay, _dump(command), now),
        )

    async def _repoint(self, tx: Transaction, request_id: str, command: Envelope) -> None:
        await tx.execute(
            "UPDATE activation_request SET command = ?, updated_at = ? WHERE request_id = ?",
            (_dump(command), self.clock(), request_id),
        )

    async def _rearm(self, tx: Transaction, request_id: str, command: Envelope, delay: float) -> None:
        now = self.clock()
        await tx.execute(
            """UPDATE activation_request SET status = ?, due_at = ?, command = ?, reply = NULL,
               transient = ?, updated_at = ? WHERE request_id = ?""",
            (PENDING, now + delay, _dump(command), self._flag(False), now, request_id),
        )

    def _flag(self, value: bool) -> bool | int:
        return value if self.database.kind == "postgresql" else int(value)

    # The network side (due requests, each in a short transaction) --------------------------

    async def run(self) -> None:
        """Execute due requests until cancelled (the platform runs this as a task)."""
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # A cancel swallowed below us (a wait_for in a driver, Python 3.11) must still stop us.
                raise asyncio.CancelledError
            if await self.execute_due():
                continue
            await self._sleep_until_due()

    async def execute_due(self) -> int:
        """Execute every request due now; the number executed."""
        async with self.database.transaction() as tx:
            rows = await tx.fetchall(
                _DUE[self.database.kind],
                (PENDING, self.clock(), _BATCH),
            )
            for request_id, kind, command in rows:
                await self._execute(tx, request_id, kind, _load(command))
        return len(rows)

    async def _sleep_until_due(self) -> None:
        row = await self.database.fetchone(
            "SELECT MIN(due_at) FROM activation_request WHERE status = ?", (PENDING,)
        )
        next_due = row[0] if row and row[0] is not None else None
        delay = self.poll_interval if next_due is None else next_due - self.clock()
        delay = min(self.poll_interval, max(0.01, delay))  # poll too: requests recorded by other processes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancel (3.11)
                await self._wakeup.wait()
        self._wakeup.clear()

    async def _execute(self, tx: Transaction, request_id: str, kind: str, command: Envelope) -> None:
        if kind == ACTIVATE_SERVICE.name:
            reply, status, transient = await self._activate(tx, request_id, command)
        else:
            reply, status, transient = await self._deactivate(tx, command)
        await self._settle(tx, request_id, status, reply, transient)
        await self._reply(tx, reply)

    async def _activate(
        self, tx: Transaction, request_id: str, command: Envelope
    ) -> tuple[Envelope, str, bool]:
        service_order, orders, steps = _activation(command)
        fault = activation_fault(self.settings, orders, steps, self.rng)
        if fault is not None:
            return (
                _fault_reply(command, ACTIVATE_SERVICE.failed, fault, request_id),
                FAILED,
                not fault.permanent,
            )
        configured = [
            await self._configure(tx, request_id, index, step, service_order)
            for index, step in enumerate(steps, start=1)
        ]
        payload = {
            "requestId": request_id,
            "serviceOrderId": service_order,
            "configured": [config.to_json() for config in configured],
        }
        return command.caused(ACTIVATE_SERVICE.succeeded, payload), SUCCEEDED, False

    async def _configure(
        self, tx: Transaction, request_id: str, index: int, step: Step, service_order: str
    ) -> ElementConfig:
        config = ElementConfig(
            request_id, index, step.target, step.operation, step.spec_id, service_order, CONFIGURED
        )
        await tx.execute(
            """INSERT INTO network_element_config (request_id, step, element, operation, spec_id,
               service_order_id, state, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (request_id, step) DO NOTHING""",
            (
                request_id,
                index,
                step.target,
                step.operation,
                step.spec_id,
                service_order,
                CONFIGURED,
                self.clock(),
            ),
        )
        return config

    async def _deactivate(self, tx: Transaction, command: Envelope) -> tuple[Envelope, str, bool]:
        request_id, service_order, activation = _deactivation(command)
        fault = rollback_fault(self.settings, _orders(command), self.rng)
        if fault is not None:
            return (
                _fault_reply(command, DEACTIVATE_SERVICE.failed, fault, request_id),
                FAILED,
                not fault.permanent,
            )
        await self._cancel_unexecuted(tx, activation)
        rolled_back = await self._roll_back(tx, activation)
        payload = {
            "requestId": request_id,
            "serviceOrderId": service_order,
            "activationRequestId": activation,
            "rolledBack": [config.to_json() for config in rolled_back],
        }
        return command.caused(DEACTIVATE_SERVICE.succeeded, payload), SUCCEEDED, False

    async def _cancel_unexecuted(self, tx: Transaction, activation: str) -> None:
        """A rollback overtook its activation: make sure that activation never configures anything."""
        row = await tx.fetchone("SELECT status FROM activation_request WHERE request_id = ?", (activation,))
        if row is not None and row[0] not in (PENDING, FAILED):
            return
        cancelled = Envelope(
            event_type=ACTIVATE_SERVICE.failed,
            payload={
                "requestId": activation,
                **failure("rolled back before it was executed", permanent=True),
            },
            entity_key=activation,
            category=Category.DOMAIN,
        )
        now = self.clock()
        if row is None:
            await tx.execute(
                """INSERT INTO activation_request
                   (request_id, kind, status, due_at, command, reply, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (activation, ACTIVATE_SERVICE.name, CANCELLED, now, _dump(cancelled), _dump(cancelled), now),
            )
        else:
            await self._settle(tx, activation, CANCELLED, cancelled, False)

    async def _roll_back(self, tx: Transaction, activation: str) -> list[ElementConfig]:
        rows = await tx.fetchall(
            """SELECT request_id, step, element, operation, spec_id, service_order_id
               FROM network_element_config WHERE request_id = ? AND state = ?
               ORDER BY step DESC""",  # undone in reverse order
            (activation, CONFIGURED),
        )
        await tx.execute(
            "UPDATE network_element_config SET state = ?, changed_at = ? WHERE request_id = ? AND state = ?",
            (ROLLED_BACK, self.clock(), activation, CONFIGURED),
        )
        return [
            ElementConfig(request, step, element, operation, spec, service_order, ROLLED_BACK)
            for request, step, element, operation, spec, service_order in rows
        ]

    async def _settle(
        self, tx: Transaction, request_id: str, status: str, reply: Envelope, transient: bool
    ) -> None:
        await tx.execute(
            """UPDATE activation_request SET status = ?, reply = ?, transient = ?, updated_at = ?
               WHERE request_id = ?""",
            (status, _dump(reply), self._flag(transient), self.clock(), request_id),
        )

    async def _reply(self, tx: Transaction, reply: Envelope) -> None:
        await self.sink.emit(tx, reply, SERVICE_EVENTS)

    # Reads (operators, tests) --------------------------------------------------------------

    async def configuration(self, service_order_id: str) -> list[ElementConfig]:
        """What the network holds for a service order, configured and rolled back."""
        rows = await self.database.fetchall(
            """SELECT request_id, step, element, operation, spec_id, service_order_id, state
               FROM network_element_config WHERE service_order_id = ? ORDER BY request_id, step""",
            (service_order_id,),
        )
        return [ElementConfig(*row) for row in rows]

    async def pending(self) -> int:
        row = await self.database.fetchone(
            "SELECT COUNT(*) FROM activation_request WHERE status = ?", (PENDING,)
        )
        return int(row[0]) if row else 0


# Commands --------------------------------------------------------------------------------------


def _kind_of(command: Envelope) -> str:
    if command.event_type not in (ACTIVATE_SERVICE.name, DEACTIVATE_SERVICE.name):
        raise MalformedCommand(f"the activation simulator does not execute {command.event_type!r}")
    return command.event_type


def _parse(kind: str, command: Envelope) -> None:
    """Refuse a malformed command up front, so the scheduled execution never meets one."""
    if kind == ACTIVATE_SERVICE.name:
        _activation(command)
    else:
        _deactivation(command)


def _activation(command: Envelope) -> tuple[str, list[str], list[Step]]:
    payload = command.payload
    service_order = _text(payload.get("serviceOrderId"), "serviceOrderId")
    steps = payload.get("steps")
    if not isinstance(steps, list):
        raise MalformedCommand(f"'steps' must be a list, got {steps!r}")
    return service_order, _orders(command), [_step(step) for step in steps]


def _step(data: Any) -> Step:
    if not isinstance(data, Mapping):
        raise MalformedCommand(f"a step must be an object, got {data!r}")
    operation = _text(data.get("operation"), "step.operation")
    target = _text(data.get("target"), "step.target")
    return Step(operation, target, str(data.get("specId") or ""))


def _deactivation(command: Envelope) -> tuple[str, str, str]:
    payload = command.payload
    request_id = _text(payload.get("requestId") or command.extra.get("requestId"), "requestId")
    service_order = _text(payload.get("serviceOrderId"), "serviceOrderId")
    return request_id, service_order, _text(payload.get("activationRequestId"), "activationRequestId")


def _orders(command: Envelope) -> list[str]:
    """The orders a command is about, and its correlationId (``fail_orders`` may name either)."""
    orders = [
        str(command.payload[key]) for key in ("serviceOrderId", "productOrderId") if command.payload.get(key)
    ]
    return [*orders, command.correlation_id] if command.correlation_id else orders


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedCommand(f"'{name}' must be a non-empty string, got {value!r}")
    return value


# Replies ---------------------------------------------------------------------------------------


def _fault_reply(command: Envelope, event_type: str, fault: InjectedFault, request_id: str) -> Envelope:
    payload: dict[str, Any] = {"requestId": request_id, **failure(fault.message(), permanent=fault.permanent)}
    if fault.step is not None:
        payload["failedStep"] = {
            "operation": fault.step.operation,
            "target": fault.step.target,
            "specId": fault.step.spec_id,
        }
    return command.caused(event_type, payload)


def _replayed(command: Envelope, stored: str | None) -> Envelope:
    """The recorded outcome, as a reply to ``command`` (the saga matches replies by causation)."""
    if stored is None:
        raise MalformedCommand("an executed activation request has no recorded reply")
    recorded = _load(stored)
    return command.caused(recorded.event_type, recorded.payload)


def _dump(envelope: Envelope) -> str:
    """An envelope as stored: its TMF body plus what the body does not carry."""
    extra = {
        "entityKey": envelope.entity_key,
        "category": envelope.category.value,
        "traceparent": envelope.traceparent,
        "causationId": envelope.causation_id,
    }
    return orjson.dumps({"body": envelope.to_tmf(), **extra}).decode()


def _load(text: str) -> Envelope:
    stored = orjson.loads(text)
    return Envelope.from_tmf(
        stored["body"],
        entity_key=stored["entityKey"],
        category=Category(stored["category"]),
        traceparent=stored["traceparent"],
        causation_id=stored["causationId"],
    )
