"""The TMF641 ServiceOrder as an event-sourced aggregate, pure (no I/O).

A service order is created by SOM from a product order that reached
``inProgress``; the fulfilment saga then decides its outcome. The aggregate
only keeps the TMF641 document and its lifecycle honest: states and item
states move along ``components/ordering/states.py``'s machines, with the exact
v4 spellings, and a cancellation goes ``assessingCancellation →
pendingCancellation → cancelled`` (or back to ``inProgress`` when the saga
ended before it could be cancelled).

Every recorded event is kept with the document right after it
(:meth:`ServiceOrder.take_changes`) so the notifications carry the full
resource, as TMF notifications do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import orjson

from strowger.components.ordering.states import (
    CANCEL_TASK,
    SERVICE_ORDER,
    ServiceOrderState,
    TaskState,
)
from strowger.errors import InvalidStateTransition
from strowger.events.envelope import format_time
from strowger.store.aggregate import Aggregate, DomainEvent

Document = dict[str, Any]

FINAL = frozenset(
    {
        ServiceOrderState.COMPLETED,
        ServiceOrderState.FAILED,
        ServiceOrderState.PARTIAL,
        ServiceOrderState.REJECTED,
        ServiceOrderState.CANCELLED,
    }
)
OUTCOMES = frozenset({ServiceOrderState.COMPLETED, ServiceOrderState.FAILED, ServiceOrderState.CANCELLED})


def _copy(document: Document) -> Document:
    """A deep copy of a JSON document; an orjson round trip is several times cheaper than deepcopy."""
    copied: Document = orjson.loads(orjson.dumps(document))
    return copied


@dataclass(frozen=True)
class ServiceOrderCreated(DomainEvent):
    order: Document  # the TMF641 document as created (state acknowledged)
    correlation_id: str = ""  # the product order's: every event of the order carries it


@dataclass(frozen=True)
class ServiceOrderStateChanged(DomainEvent):
    state: str
    at: str
    reason: str = ""  # failure or cancellation reason, kept on the document


@dataclass(frozen=True)
class ServiceOrderCancellationRequested(DomainEvent):
    task: Document  # the cancelServiceOrder task (state inProgress)


@dataclass(frozen=True)
class CancelServiceOrderStateChanged(DomainEvent):
    task_id: str
    state: str
    at: str


@dataclass(frozen=True)
class Change:
    """One recorded event and the resource right after it (what its notification carries)."""

    event: DomainEvent
    order: Document
    task: Document | None = None


class ServiceOrder(Aggregate):
    """A TMF641 serviceOrder: its document, state and cancel tasks."""

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (
        ServiceOrderCreated,
        ServiceOrderStateChanged,
        ServiceOrderCancellationRequested,
        CancelServiceOrderStateChanged,
    )
    snapshot_every: ClassVar[int | None] = 50

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.document: Document = {}
        self.correlation_id = ""
        self.cancel_tasks: dict[str, Document] = {}
        self._changes: list[Change] = []

    # -- commands ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, order_id: str, document: Document, now: datetime, *, correlation_id: str = ""
    ) -> ServiceOrder:
        """A new order in ``acknowledged`` (items too), dated ``now``."""
        order = cls(order_id)
        body = _copy(document)
        body.update({"id": order_id, "state": ServiceOrderState.ACKNOWLEDGED.value})
        body.setdefault("orderDate", format_time(now))
        body.setdefault("@type", "ServiceOrder")
        for item in body.get("serviceOrderItem", ()):
            item["state"] = ServiceOrderState.ACKNOWLEDGED.value
        order._record(ServiceOrderCreated(order=body, correlation_id=correlation_id))
        return order

    @property
    def state(self) -> ServiceOrderState:
        return ServiceOrderState(self.document["state"])

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    def start(self, now: datetime) -> None:
        """Fulfilment started: ``acknowledged → inProgress`` (no-op once past it)."""
        if self.state is ServiceOrderState.ACKNOWLEDGED:
            self._move(ServiceOrderState.IN_PROGRESS, now)

    def request_cancellation(
        self, task_id: str, *, href: str, reason: str, requested: str | None, now: datetime
    ) -> Document:
        """Open a cancelServiceOrder task; the order goes to ``assessingCancellation``.

        InvalidStateTransition if the order is final or already being cancelled.
        """
        if self.is_final or self.state in (
            ServiceOrderState.ASSESSING_CANCELLATION,
            ServiceOrderState.PENDING_CANCELLATION,
        ):
            raise InvalidStateTransition(
                f"serviceOrder {self.id} is {self.state.value}: it cannot be cancelled now"
            )
        task: Document = {
            "id": task_id,
            "href": href,
            "@type": "CancelServiceOrder",
            "state": TaskState.IN_PROGRESS.value,
            "cancellationReason": reason,
            "serviceOrder": {
                "id": self.id,
                "href": self.document.get("href"),
                "@referredType": "ServiceOrder",
            },
        }
        if requested:
            task["requestedCancellationDate"] = requested
        self._record(ServiceOrderCancellationRequested(task=task))
        self._move(ServiceOrderState.ASSESSING_CANCELLATION, now, reason)
        return _copy(self.cancel_tasks[task_id])

    def conclude(self, outcome: ServiceOrderState, now: datetime, reason: str = "") -> None:
        """Record the saga's outcome (completed, failed or cancelled); no-op if already final.

        A cancellation being assessed is refused first (tasks ``terminatedWithError``,
        order back to ``inProgress``) when the outcome is not ``cancelled``.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"{outcome.value} is not an outcome of fulfilment")
        if self.is_final:
            return
        if self.state is ServiceOrderState.ACKNOWLEDGED:
            self._move(ServiceOrderState.IN_PROGRESS, now)
        if outcome is ServiceOrderState.CANCELLED:
            reason = self._requested_reason() or reason
            if self.state is not ServiceOrderState.ASSESSING_CANCELLATION:
                self._move(ServiceOrderState.ASSESSING_CANCELLATION, now, reason)
            self._move(ServiceOrderState.PENDING_CANCELLATION, now, reason)
            self._move(ServiceOrderState.CANCELLED, now, reason)
            self._close_tasks(TaskState.DONE, now)
            return
        if self.state is ServiceOrderState.ASSESSING_CANCELLATION:
            self._close_tasks(TaskState.TERMINATED_WITH_ERROR, now)
            self._move(
                ServiceOrderState.IN_PROGRESS, now, f"cancellation refused: fulfilment {outcome.value}"
            )
        self._move(outcome, now, reason)

    def take_changes(self) -> list[Change]:
        """The changes recorded since the last call (for notifications and the read model)."""
        changes, self._changes = self._changes, []
        return changes

    def to_tmf(self) -> Document:
        return _copy(self.document)

    # -- evolution --------------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case ServiceOrderCreated(order=order, correlation_id=correlation_id):
                self.document = _copy(order)
                self.correlation_id = correlation_id
            case ServiceOrderStateChanged(state=state, at=at, reason=reason):
                self._apply_state(ServiceOrderState(state), at, reason)
            case ServiceOrderCancellationRequested(task=task):
                self.cancel_tasks[str(task["id"])] = _copy(task)
            case CancelServiceOrderStateChanged(task_id=task_id, state=state, at=at):
                task = self.cancel_tasks[task_id]
                task["state"] = state
                if state == TaskState.DONE.value:
                    task["effectiveCancellationDate"] = at

    def _apply_state(self, state: ServiceOrderState, at: str, reason: str) -> None:
        document = self.document
        document["state"] = state.value
        for item in document.get("serviceOrderItem", ()):
            item["state"] = state.value
        if state in (ServiceOrderState.COMPLETED, ServiceOrderState.FAILED, ServiceOrderState.CANCELLED):
            document["completionDate"] = at
        if state is ServiceOrderState.IN_PROGRESS:
            document.setdefault("startDate", at)
        if state is ServiceOrderState.FAILED and reason:
            # TMF641 v4.1 ServiceOrderErrorMessage: what went wrong, for COM and operators.
            document["errorMessage"] = {
                "@type": "ServiceOrderErrorMessage",
                "reason": reason,
                "message": "fulfilment failed; what was done has been undone",
            }
        if state is ServiceOrderState.CANCELLED:
            document["cancellationDate"] = at
            if reason:
                document["cancellationReason"] = reason

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "correlation_id": self.correlation_id,
            "cancel_tasks": self.cancel_tasks,
        }

    # -- helpers ----------------------------------------------------------------------------------

    def _move(self, target: ServiceOrderState, now: datetime, reason: str = "") -> None:
        SERVICE_ORDER.transition(self.state, target)  # raises InvalidStateTransition if illegal
        self._record(ServiceOrderStateChanged(state=target.value, at=format_time(now), reason=reason))

    def _requested_reason(self) -> str:
        """The reason the open cancel task gives (what the customer said, not the saga's wording)."""
        for task in reversed(list(self.cancel_tasks.values())):
            if not CANCEL_TASK.is_terminal(task["state"]) and task.get("cancellationReason"):
                return str(task["cancellationReason"])
        return ""

    def _close_tasks(self, state: TaskState, now: datetime) -> None:
        for task_id, task in list(self.cancel_tasks.items()):
            if CANCEL_TASK.is_terminal(task["state"]):
                continue
            CANCEL_TASK.transition(task["state"], state)
            self._record(
                CancelServiceOrderStateChanged(task_id=task_id, state=state.value, at=format_time(now))
            )

    def _record(self, event: DomainEvent) -> None:
        self.record(event)
        task: Document | None = None
        if isinstance(event, ServiceOrderCancellationRequested):
            task = _copy(self.cancel_tasks[str(event.task["id"])])
        elif isinstance(event, CancelServiceOrderStateChanged):
            task = _copy(self.cancel_tasks[event.task_id])
        self._changes.append(Change(event, self.to_tmf(), task))
