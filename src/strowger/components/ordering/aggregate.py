"""The TMF622 ProductOrder as an event-sourced aggregate, pure (no I/O, no clock).

The aggregate's state is the TMF resource itself (``document``: the
``productOrder`` exactly as the API returns it) plus what the rules need to
remember (the order's correlation id, the states before a cancellation was
assessed, its cancel tasks). Every change is a domain event; the API and the
consumers translate those events into TMF notifications
(:mod:`strowger.components.ordering.notifications`).

Times are passed in by the caller (``now``) and recorded in the events, so a
replay rebuilds exactly the same document.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from strowger.components.ordering.states import (
    CANCEL_TASK,
    PRODUCT_ORDER,
    PRODUCT_ORDER_ITEM,
    OrderItemAction,
    ProductOrderState,
    TaskState,
    order_state_from_items,
)
from strowger.errors import InvalidStateTransition, PermanentError
from strowger.events.envelope import format_time, is_date_time
from strowger.store.aggregate import Aggregate, DomainEvent

Document = dict[str, Any]

FINAL_STATES = frozenset(PRODUCT_ORDER.terminal_states)
CANCELLING = frozenset({ProductOrderState.ASSESSING_CANCELLATION, ProductOrderState.PENDING_CANCELLATION})
# States a client may ask for through PATCH (pause and resume). Outcomes come from
# fulfilment, rejection from validation and cancellation from a cancelProductOrder task.
CLIENT_STATES = frozenset({ProductOrderState.HELD, ProductOrderState.PENDING, ProductOrderState.IN_PROGRESS})
# Set by the server only; a PATCH that changes one is refused (400 readOnlyField).
READ_ONLY = frozenset(
    {
        "id",
        "href",
        "@type",
        "orderDate",
        "completionDate",
        "expectedCompletionDate",
        "cancellationDate",
        "cancellationReason",
    }
)
# Attributes that may still change once fulfilment has started (annotations, contact).
LATE_WRITABLE = frozenset({"description", "note", "notificationContact", "externalId", "priority", "state"})
NOTE_AUTHOR = "strowger"
J = TypeVar("J")


def json_copy(value: J) -> J:
    """A deep copy of a JSON value (every document and event field here is one).

    An orjson round trip: several times faster than ``copy.deepcopy`` on these
    documents, and each command copies the order a few times.
    """
    copied: J = orjson.loads(orjson.dumps(value))
    return copied


class InvalidOrder(PermanentError):
    """The order message breaks a TMF622 rule; ``field`` names the offending attribute (dotted path)."""

    def __init__(self, message: str, field: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.missing = missing  # the attribute is absent (rather than wrong)


class ReadOnlyAttribute(InvalidOrder):
    """A change to an attribute only the server sets."""


class OrderClosed(InvalidStateTransition):
    """A change the order's current state does not allow (other than a state move)."""


# -- domain events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderAccepted(DomainEvent):
    """The order message passed message validation; ``order`` is the resource as first stored."""

    event_type = "ProductOrderAccepted"
    order: Document
    correlation_id: str


@dataclass(frozen=True)
class OrderAttributesChanged(DomainEvent):
    """A client changed attributes (a JSON merge of ``changes``); ``fields`` lists them."""

    event_type = "ProductOrderAttributesChanged"
    changes: Document
    fields: list[str]


@dataclass(frozen=True)
class OrderStateChanged(DomainEvent):
    event_type = "ProductOrderStateChanged"
    state: str
    at: str
    reason: str | None = None


@dataclass(frozen=True)
class ItemStatesChanged(DomainEvent):
    event_type = "ProductOrderItemStatesChanged"
    states: dict[str, str]
    at: str


@dataclass(frozen=True)
class CancellationRequested(DomainEvent):
    """A cancelProductOrder task was accepted for this order (``task``: the TMF resource)."""

    event_type = "ProductOrderCancellationRequested"
    task: Document


@dataclass(frozen=True)
class CancelTaskStateChanged(DomainEvent):
    event_type = "CancelProductOrderStateChanged"
    task_id: str
    state: str
    at: str


@dataclass(frozen=True)
class OrderDeleted(DomainEvent):
    event_type = "ProductOrderDeleted"
    at: str


@dataclass(frozen=True)
class Change:
    """One recorded event with the resources as they were right after it (for notifications)."""

    event: DomainEvent
    order: Document
    task: Document | None = None


# -- message validation --------------------------------------------------------------------------


# The date-times of TMF622 ``ProductOrder_Create`` (the event schema types them, not their format).
CLIENT_DATE_TIMES = ("requestedCompletionDate", "requestedStartDate", "cancellationDate")
ITEM_ACTIONS = frozenset(member.value for member in OrderItemAction)


def check_order_message(body: Mapping[str, Any]) -> None:
    """TMF622 message rules: ``productOrderItem`` present and non-empty, each item (nested too) with a
    unique ``id``, a known ``action`` and relationships to other items of the order; readable
    date-times. Raises :class:`InvalidOrder` naming the field."""
    items = body.get("productOrderItem")
    if items is None:
        raise InvalidOrder("productOrderItem is required", "productOrderItem", missing=True)
    if not isinstance(items, list) or not items:
        raise InvalidOrder("productOrderItem must be a non-empty array", "productOrderItem")
    seen: set[str] = set()
    for path, item in _walk(items, "productOrderItem"):
        if not isinstance(item, Mapping):
            raise InvalidOrder(f"{path} must be an object", path)
        item_id = item.get("id")
        if item_id is None:
            raise InvalidOrder(f"{path}.id is required", f"{path}.id", missing=True)
        if not isinstance(item_id, str) or not item_id:
            raise InvalidOrder(f"{path}.id must be a non-empty string", f"{path}.id")
        if item_id in seen:
            raise InvalidOrder(f"{path}.id {item_id!r} is used by another item", f"{path}.id")
        seen.add(item_id)
        action = item.get("action")
        if action is None:
            raise InvalidOrder(f"{path}.action is required", f"{path}.action", missing=True)
        if not isinstance(action, str) or action not in ITEM_ACTIONS:
            allowed = ", ".join(member.value for member in OrderItemAction)
            raise InvalidOrder(f"{path}.action {action!r} is not one of: {allowed}", f"{path}.action")
    for path, item in _walk(items, "productOrderItem"):
        _check_relationships(path, item, seen)
    for name in CLIENT_DATE_TIMES:
        if not is_date_time(body.get(name)):
            raise InvalidOrder(f"{name}: {body[name]!r} is not a date-time (e.g. 2026-03-15T09:00:00Z)", name)


def _check_relationships(path: str, item: Mapping[str, Any], item_ids: set[str]) -> None:
    """Each ``productOrderItemRelationship`` names another item of this order (``reliesOn``, ``bundles``…)."""
    relationships = item.get("productOrderItemRelationship")
    if relationships is None:
        return
    where = f"{path}.productOrderItemRelationship"
    if not isinstance(relationships, list):
        raise InvalidOrder(f"{where} must be an array", where)
    for index, relationship in enumerate(relationships):
        here = f"{where}[{index}]"
        target = relationship.get("id") if isinstance(relationship, Mapping) else None
        if target is None:
            raise InvalidOrder(f"{here}.id is required", f"{here}.id", missing=True)
        if not isinstance(target, str) or target not in item_ids or target == item["id"]:
            raise InvalidOrder(f"{here}.id {target!r} is not another item of this order", f"{here}.id")


def _walk(items: Sequence[Any], path: str) -> Iterator[tuple[str, Any]]:
    for index, item in enumerate(items):
        here = f"{path}[{index}]"
        yield here, item
        children = item.get("productOrderItem") if isinstance(item, Mapping) else None
        if isinstance(children, list):
            yield from _walk(children, f"{here}.productOrderItem")


# -- the aggregate -------------------------------------------------------------------------------


class ProductOrder(Aggregate):
    """One TMF622 product order."""

    stream_type = "ProductOrder"
    snapshot_every = 50
    event_types = (
        OrderAccepted,
        OrderAttributesChanged,
        OrderStateChanged,
        ItemStatesChanged,
        CancellationRequested,
        CancelTaskStateChanged,
        OrderDeleted,
    )

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.document: Document = {}
        self.correlation_id = ""
        self.deleted = False
        self.before_cancellation: dict[str, Any] | None = None  # {"order": state, "items": {id: state}}
        self.cancel_tasks: dict[str, Document] = {}
        self._changes: list[Change] = []

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> ProductOrderState:
        return ProductOrderState(self.document["state"])

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def item_states(self) -> dict[str, str]:
        return {str(item["id"]): str(item["state"]) for item in self.document.get("productOrderItem", ())}

    def to_tmf(self) -> Document:
        """The productOrder resource (a copy: safe to hand out)."""
        return json_copy(self.document)

    def take_changes(self) -> list[Change]:
        """The events recorded since the last call, each with the resources right after it."""
        changes, self._changes = self._changes, []
        return changes

    # -- commands --------------------------------------------------------------------

    @classmethod
    def place(
        cls, order_id: str, body: Mapping[str, Any], *, href: str, now: datetime, correlation_id: str
    ) -> ProductOrder:
        """Accept a new order: checks the message, sets id/href/orderDate and ``acknowledged`` states."""
        check_order_message(body)
        refused = sorted((READ_ONLY | {"state"}).intersection(body) - {"@type"})
        if refused:
            raise ReadOnlyAttribute(f"{refused[0]} is set by the server", refused[0])
        document: Document = {"id": order_id, "href": href, **json_copy(dict(body))}
        document.setdefault("@type", "ProductOrder")
        document["orderDate"] = format_time(now)
        document["state"] = ProductOrderState.ACKNOWLEDGED.value
        for item in document["productOrderItem"]:
            item["state"] = PRODUCT_ORDER_ITEM.initial.value
        order = cls(order_id)
        order.record(OrderAccepted(order=document, correlation_id=correlation_id))
        return order

    def amend(self, after: Mapping[str, Any], now: datetime) -> None:
        """Apply a client's PATCH result ``after`` (the whole resource as the client wants it).

        Read-only attributes answer :class:`ReadOnlyAttribute`; a final order, or
        items changed once fulfilment started, :class:`OrderClosed`; a state the
        client may not ask for or an illegal move, InvalidStateTransition.
        """
        self._require_open("changed")
        before = self.document
        fields = sorted(
            name
            for name in set(before) | set(after)
            if before.get(name, _MISSING) != after.get(name, _MISSING)
        )
        for name in fields:
            if name in READ_ONLY:
                raise ReadOnlyAttribute(f"{name} is set by the server", name)
        if self.state is not ProductOrderState.ACKNOWLEDGED:
            late = [name for name in fields if name not in LATE_WRITABLE]
            if late:
                raise OrderClosed(
                    f"{late[0]} cannot change once the order is {self.state.value} "
                    f"(only {', '.join(sorted(LATE_WRITABLE))} may)"
                )
        if "productOrderItem" in fields:
            self._check_items_unchanged_in_state(before, after)
            check_order_message(after)
        target = after.get("state") if "state" in fields else None
        attributes = [name for name in fields if name != "state"]
        if attributes:
            changes = {name: json_copy(after.get(name)) for name in attributes}
            self.record(OrderAttributesChanged(changes=changes, fields=attributes))
        if target is not None:
            self._client_move(str(target), now)

    def start_fulfilment(self, now: datetime) -> None:
        """Validation passed: items and order to ``inProgress`` (fulfilment starts on this event)."""
        self._move_items({item: "inProgress" for item in self.item_states()}, now)
        self._move(ProductOrderState.IN_PROGRESS, now)

    def reject(self, reason: str, now: datetime) -> None:
        """Validation failed: items and order to ``rejected``, the reason in a ``note``."""
        self._move_items({item: "rejected" for item in self.item_states()}, now)
        self._move(ProductOrderState.REJECTED, now, reason)

    def record_fulfilment(
        self, item_ids: Sequence[str], outcome: str, now: datetime, reason: str | None = None
    ) -> None:
        """Fulfilment finished ``item_ids`` (all items if empty) with ``outcome`` (an item state).

        ``reason`` (why fulfilment failed, from the service order) goes into a ``note`` when the
        order itself turns ``failed``, as a rejection's does: the customer's order says why.

        A completed/failed outcome while a cancellation is being assessed refuses the
        cancellation first (it came too late); ``cancelled`` confirms it.
        """
        if outcome == "cancelled":
            self.confirm_cancellation(now)
            return
        if self.state is ProductOrderState.ASSESSING_CANCELLATION:
            self.refuse_cancellation("fulfilment finished before the cancellation took effect", now)
        targets = list(item_ids) or list(self.item_states())
        unknown = sorted(set(targets) - set(self.item_states()))
        if unknown:
            raise InvalidOrder(f"order {self.id} has no item {unknown[0]!r}", "productOrderItem.id")
        open_items = {
            item: outcome for item in targets if not PRODUCT_ORDER_ITEM.is_terminal(self.item_states()[item])
        }
        self._move_items(open_items, now)
        derived = ProductOrderState(order_state_from_items(self.item_states().values()))
        if derived is not self.state:
            self._move(derived, now, reason if derived is ProductOrderState.FAILED else None)

    def request_cancellation(
        self, task_id: str, *, href: str, body: Mapping[str, Any], now: datetime
    ) -> Document:
        """Accept a cancelProductOrder task: the order goes to ``assessingCancellation``.

        An order nothing was sent to fulfilment for (still ``acknowledged``) is
        cancelled at once and the task is ``done``; otherwise the task stays
        ``inProgress`` until fulfilment confirms (``cancelled``) or refuses.
        """
        self._require_open("cancelled")
        if self.state in CANCELLING:
            raise InvalidStateTransition(f"productOrder {self.id} is already {self.state.value}")
        task: Document = {
            "id": task_id,
            "href": href,
            **{key: json_copy(value) for key, value in body.items() if key not in ("id", "href", "state")},
            "productOrder": {"id": self.id, "href": self.document["href"], "@referredType": "ProductOrder"},
            "state": TaskState.ACCEPTED.value,
        }
        task.setdefault("@type", "CancelProductOrder")
        started = self.state is not ProductOrderState.ACKNOWLEDGED
        self.record(CancellationRequested(task=task))
        self._move_items({item: "assessingCancellation" for item in self._open_items()}, now)
        self._move(ProductOrderState.ASSESSING_CANCELLATION, now)
        if started:
            self._move_task(task_id, TaskState.IN_PROGRESS, now)
        else:
            self.confirm_cancellation(now)
        return json_copy(self.cancel_tasks[task_id])

    def confirm_cancellation(self, now: datetime) -> None:
        """Fulfilment stopped: order and items ``cancelled``, the open task ``done``."""
        if self.state is ProductOrderState.ASSESSING_CANCELLATION:
            cancelling = self._open_items()
            self._move_items(dict.fromkeys(cancelling, "pendingCancellation"), now)
            self._move(ProductOrderState.PENDING_CANCELLATION, now)
        if self.state is not ProductOrderState.PENDING_CANCELLATION:
            raise InvalidStateTransition(
                f"productOrder {self.id} is {self.state.value}: there is no cancellation to confirm"
            )
        self._move_items(dict.fromkeys(self._open_items(), "cancelled"), now)
        self._move(ProductOrderState.CANCELLED, now)
        for task_id in self._open_tasks():
            self._move_task(task_id, TaskState.DONE, now)

    def refuse_cancellation(self, reason: str, now: datetime) -> None:
        """The cancellation cannot happen: back to the states before it, the task ``terminatedWithError``."""
        if self.state is not ProductOrderState.ASSESSING_CANCELLATION or self.before_cancellation is None:
            raise InvalidStateTransition(f"productOrder {self.id} is not assessing a cancellation")
        previous = self.before_cancellation
        self._move_items(dict(previous["items"]), now)
        self._move(ProductOrderState(previous["order"]), now, f"cancellation refused: {reason}")
        for task_id in self._open_tasks():
            self._move_task(task_id, TaskState.TERMINATED_WITH_ERROR, now)

    def delete(self, now: datetime) -> None:
        """Remove the order from the API (its stream stays: history and point-in-time reads)."""
        if not self.is_final:
            raise OrderClosed(
                f"productOrder {self.id} is {self.state.value}: only a finished order can be deleted "
                "(cancel it with a cancelProductOrder task)"
            )
        self.record(OrderDeleted(at=format_time(now)))

    # -- rules -------------------------------------------------------------------------

    def _require_open(self, verb: str) -> None:
        if self.is_final:
            raise OrderClosed(f"productOrder {self.id} is {self.state.value} and can no longer be {verb}")

    def _client_move(self, target: str, now: datetime) -> None:
        wanted = PRODUCT_ORDER.parse(target)
        if wanted not in CLIENT_STATES:
            raise InvalidStateTransition(
                f"state {wanted.value} cannot be set through PATCH "
                f"(a client may ask for {', '.join(sorted(CLIENT_STATES))}; "
                "cancel with a cancelProductOrder task)"
            )
        if wanted is ProductOrderState.IN_PROGRESS and self.state is ProductOrderState.ACKNOWLEDGED:
            raise InvalidStateTransition("an acknowledged order goes inProgress once it has been validated")
        self._move(wanted, now)

    def _check_items_unchanged_in_state(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        old = {item.get("id"): item.get("state") for item in before.get("productOrderItem", ())}
        for item in after.get("productOrderItem") or ():
            if isinstance(item, Mapping) and "state" in item and item.get("state") != old.get(item.get("id")):
                raise ReadOnlyAttribute(
                    "productOrderItem.state is set by the server", "productOrderItem.state"
                )

    def _open_items(self) -> list[str]:
        return [
            item for item, state in self.item_states().items() if not PRODUCT_ORDER_ITEM.is_terminal(state)
        ]

    def _open_tasks(self) -> list[str]:
        return [
            task_id
            for task_id, task in self.cancel_tasks.items()
            if not CANCEL_TASK.is_terminal(task["state"])
        ]

    def _move(self, target: ProductOrderState, now: datetime, reason: str | None = None) -> None:
        PRODUCT_ORDER.transition(self.state, target)
        self.record(OrderStateChanged(state=target.value, at=format_time(now), reason=reason))

    def _move_items(self, targets: Mapping[str, str], now: datetime) -> None:
        current = self.item_states()
        moves = {item: target for item, target in targets.items() if current[item] != target}
        for item, target in moves.items():
            PRODUCT_ORDER_ITEM.transition(current[item], target)
        if moves:
            self.record(ItemStatesChanged(states=dict(moves), at=format_time(now)))

    def _move_task(self, task_id: str, target: TaskState, now: datetime) -> None:
        CANCEL_TASK.transition(self.cancel_tasks[task_id]["state"], target)
        self.record(CancelTaskStateChanged(task_id=task_id, state=target.value, at=format_time(now)))

    # -- evolution -----------------------------------------------------------------------

    def record(self, event: DomainEvent) -> None:
        super().record(event)
        task_id = getattr(event, "task_id", None) or (
            event.task["id"] if isinstance(event, CancellationRequested) else None
        )
        task = json_copy(self.cancel_tasks[task_id]) if task_id else None
        self._changes.append(Change(event, self.to_tmf(), task))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case OrderAccepted(order=order, correlation_id=correlation_id):
                self.document = json_copy(order)
                self.correlation_id = correlation_id
            case OrderAttributesChanged(changes=changes):
                for name, value in changes.items():
                    if value is None:
                        self.document.pop(name, None)
                    else:
                        self.document[name] = json_copy(value)
            case OrderStateChanged(state=state, at=at, reason=reason):
                self._apply_state(state, at, reason)
            case ItemStatesChanged(states=states):
                for item in self.document.get("productOrderItem", ()):
                    if item["id"] in states:
                        item["state"] = states[item["id"]]
            case CancellationRequested(task=task):
                self.cancel_tasks[task["id"]] = json_copy(task)
                self.before_cancellation = {"order": self.document["state"], "items": self.item_states()}
                if task.get("cancellationReason"):
                    self.document["cancellationReason"] = task["cancellationReason"]
            case CancelTaskStateChanged(task_id=task_id, state=state, at=at):
                task = self.cancel_tasks[task_id]
                task["state"] = state
                if state == TaskState.DONE.value:
                    task["effectiveCancellationDate"] = at
            case OrderDeleted():
                self.deleted = True

    def _apply_state(self, state: str, at: str, reason: str | None) -> None:
        self.document["state"] = state
        if reason:
            note = {"author": NOTE_AUTHOR, "date": at, "text": reason, "@type": "Note"}
            self.document.setdefault("note", []).append(note)
        if state in FINAL_STATES and at:
            self.document["completionDate"] = at
        if state == ProductOrderState.CANCELLED.value and at:
            self.document["cancellationDate"] = at
        if state not in CANCELLING:
            self.before_cancellation = None

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "correlation_id": self.correlation_id,
            "deleted": self.deleted,
            "before_cancellation": self.before_cancellation,
            "cancel_tasks": self.cancel_tasks,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.document = json_copy(state["document"])
        self.correlation_id = state["correlation_id"]
        self.deleted = state["deleted"]
        self.before_cancellation = json_copy(state["before_cancellation"])
        self.cancel_tasks = json_copy(state["cancel_tasks"])


_MISSING = object()
