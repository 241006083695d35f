"""Order and order-item state machines of TMF622, TMF641 and TMF652 (v4), pure.

The state spellings are copied from the v4 Swagger definitions
(``ProductOrderStateType``, ``ProductOrderItemStateType``, ``ServiceOrderStateType``,
``ServiceOrderItemStateType``, ``ResourceOrderStateType``,
``ResourceOrderItemStateType``, ``TaskStateType``, ``OrderItemActionType``).
The Swagger files carry no transition table, so the transitions are those of the
TMF622 user guide's order lifecycle, shared by the three ordering APIs::

    acknowledged ──► inProgress | pending | held | rejected | assessingCancellation
    inProgress   ──► completed | failed | partial | pending | held | assessingCancellation
    pending      ──► inProgress | assessingCancellation
    held         ──► inProgress | assessingCancellation
    assessingCancellation ──► pendingCancellation, or back to the state it came from
                              (acknowledged | inProgress | pending | held) when refused
    pendingCancellation   ──► cancelled
    terminal: completed, failed, partial, rejected, cancelled

Items follow the same lifecycle without ``partial`` (an item either delivers or
not), except TMF641 service-order items whose enumeration includes ``partial``.

A refused cancellation returns to the state the entity had before assessing it;
a transition function of two states cannot know that state, so the aggregate
that calls :func:`transition` remembers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from strowger.errors import InvalidStateTransition, PermanentError


class UnknownState(PermanentError):
    """A state name that the entity's enumeration does not spell that way."""


class OrderItemAction(StrEnum):
    """``OrderItemActionType``: what an order item asks for."""

    ADD = "add"
    MODIFY = "modify"
    DELETE = "delete"
    NO_CHANGE = "noChange"


class ProductOrderState(StrEnum):
    """TMF622 ``ProductOrderStateType``."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


class ProductOrderItemState(StrEnum):
    """TMF622 ``ProductOrderItemStateType`` (no ``partial``)."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


class ServiceOrderState(StrEnum):
    """TMF641 ``ServiceOrderStateType``."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


class ServiceOrderItemState(StrEnum):
    """TMF641 ``ServiceOrderItemStateType`` (it does include ``partial``)."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"
    PARTIAL = "partial"


class ResourceOrderState(StrEnum):
    """TMF652 ``ResourceOrderStateType``."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


class ResourceOrderItemState(StrEnum):
    """TMF652 ``ResourceOrderItemStateType`` (no ``partial``)."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


class TaskState(StrEnum):
    """``TaskStateType`` of the v4 cancel tasks (CancelProductOrder, CancelServiceOrder, CancelResourceOrder).

    v4 spells ``accepted``; the v5 TMF622 enumeration renamed it ``acknowledged``
    and added ``rejected`` and ``cancelled``: Strowger serves v4.
    """

    ACCEPTED = "accepted"
    TERMINATED_WITH_ERROR = "terminatedWithError"
    IN_PROGRESS = "inProgress"
    DONE = "done"


S = TypeVar("S", bound=StrEnum)

_ORDER_LIFECYCLE: Mapping[str, tuple[str, ...]] = {
    "acknowledged": ("inProgress", "pending", "held", "rejected", "assessingCancellation"),
    "inProgress": ("completed", "failed", "partial", "pending", "held", "assessingCancellation"),
    "pending": ("inProgress", "assessingCancellation"),
    "held": ("inProgress", "assessingCancellation"),
    "assessingCancellation": ("pendingCancellation", "acknowledged", "inProgress", "pending", "held"),
    "pendingCancellation": ("cancelled",),
}

_TASK_LIFECYCLE: Mapping[str, tuple[str, ...]] = {
    "accepted": ("inProgress", "done", "terminatedWithError"),
    "inProgress": ("done", "terminatedWithError"),
}


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """The legal moves between the states of one TMF entity (``entity`` names it in messages)."""

    entity: str
    states: type[S]
    initial: S
    moves: Mapping[S, frozenset[S]]

    @classmethod
    def build(
        cls, entity: str, states: type[S], initial: str, lifecycle: Mapping[str, Iterable[str]]
    ) -> StateMachine[S]:
        """A machine for ``states`` keeping only the moves whose both ends exist in that enumeration."""
        spelled = {state.value for state in states}
        moves = {
            states(source): frozenset(states(target) for target in targets if target in spelled)
            for source, targets in lifecycle.items()
            if source in spelled
        }
        return cls(entity, states, states(initial), moves)

    def parse(self, state: str) -> S:
        """``state`` as a member of the enumeration; raises :class:`UnknownState` for a misspelling."""
        try:
            return self.states(state)
        except ValueError:
            expected = ", ".join(member.value for member in self.states)
            raise UnknownState(
                f"{state!r} is not a {self.entity} state (expected one of: {expected})"
            ) from None

    @property
    def terminal_states(self) -> frozenset[S]:
        """States no transition leaves."""
        return frozenset(state for state in self.states if not self.moves.get(state))

    def is_terminal(self, state: S | str) -> bool:
        return self.parse(state) in self.terminal_states

    def next_states(self, state: S | str) -> frozenset[S]:
        return self.moves.get(self.parse(state), frozenset())

    def can_transition(self, current: S | str, target: S | str) -> bool:
        return self.parse(target) in self.next_states(current)

    def transition(self, current: S | str, target: S | str) -> S:
        """``target`` if the move is legal; raises :class:`InvalidStateTransition` saying why not."""
        source, destination = self.parse(current), self.parse(target)
        if destination in self.next_states(source):
            return destination
        if source in self.terminal_states:
            reason = f"{source.value} is a final state"
        else:
            allowed = ", ".join(sorted(state.value for state in self.next_states(source)))
            reason = f"from {source.value} it may only become: {allowed}"
        raise InvalidStateTransition(
            f"{self.entity} cannot go from {source.value} to {destination.value}: {reason}"
        )


PRODUCT_ORDER = StateMachine.build("productOrder", ProductOrderState, "acknowledged", _ORDER_LIFECYCLE)
PRODUCT_ORDER_ITEM = StateMachine.build(
    "productOrderItem", ProductOrderItemState, "acknowledged", _ORDER_LIFECYCLE
)
SERVICE_ORDER = StateMachine.build("serviceOrder", ServiceOrderState, "acknowledged", _ORDER_LIFECYCLE)
SERVICE_ORDER_ITEM = StateMachine.build(
    "serviceOrderItem", ServiceOrderItemState, "acknowledged", _ORDER_LIFECYCLE
)
RESOURCE_ORDER = StateMachine.build("resourceOrder", ResourceOrderState, "acknowledged", _ORDER_LIFECYCLE)
RESOURCE_ORDER_ITEM = StateMachine.build(
    "resourceOrderItem", ResourceOrderItemState, "acknowledged", _ORDER_LIFECYCLE
)
CANCEL_TASK = StateMachine.build("cancel task", TaskState, "accepted", _TASK_LIFECYCLE)

MACHINES: Mapping[type[StrEnum], StateMachine[StrEnum]] = {
    machine.states: machine  # type: ignore[misc]
    for machine in (
        PRODUCT_ORDER,
        PRODUCT_ORDER_ITEM,
        SERVICE_ORDER,
        SERVICE_ORDER_ITEM,
        RESOURCE_ORDER,
        RESOURCE_ORDER_ITEM,
        CANCEL_TASK,
    )
}


def machine_of(state: S) -> StateMachine[S]:
    """The machine whose enumeration ``state`` belongs to."""
    return MACHINES[type(state)]  # type: ignore[return-value]


def can_transition(current: S, target: S | str) -> bool:
    """Whether ``current`` may become ``target`` (the machine is chosen by ``current``'s enumeration)."""
    return machine_of(current).can_transition(current, target)


def transition(current: S, target: S | str) -> S:
    """``target`` as a state if legal; raises :class:`InvalidStateTransition` otherwise."""
    return machine_of(current).transition(current, target)


# -- an order's state from its items' states ---------------------------------------------------

_DELIVERED = frozenset({"completed", "partial"})
_FINAL = frozenset({"completed", "partial", "failed", "rejected", "cancelled"})
_CANCELLING = frozenset({"assessingCancellation", "pendingCancellation"})


def order_state_from_items(item_states: Iterable[str]) -> str:
    """The order state implied by its items' states (TMF622 rule, shared by TMF641 and TMF652).

    Once every item is final: all alike → that state; something delivered next to
    something not → ``partial``; nothing delivered → ``failed`` if an item failed,
    else ``cancelled`` (a mix of rejected and cancelled items). While items are
    open: all of them being cancelled → the cancellation state; otherwise the most
    advanced open state wins: ``inProgress``, then ``held``, then ``pending``; a
    finished item next to acknowledged ones means work started (``inProgress``).
    Raises ValueError for an order without items (TMF622 requires at least one).
    """
    states = list(item_states)
    if not states:
        raise ValueError("an order has at least one item")
    open_states = {state for state in states if state not in _FINAL}
    if not open_states:
        return _final_order_state(set(states))
    if open_states == {"pendingCancellation"}:
        return "pendingCancellation"
    if open_states <= _CANCELLING:
        return "assessingCancellation"
    for state in ("inProgress", "held", "pending"):
        if state in open_states:
            return state
    return "inProgress" if len(open_states) < len(set(states)) else "acknowledged"


def _final_order_state(states: set[str]) -> str:
    if len(states) == 1:
        return next(iter(states))
    if states & _DELIVERED:
        return "partial"
    return "failed" if "failed" in states else "cancelled"


def product_order_state(items: Iterable[ProductOrderItemState]) -> ProductOrderState:
    return ProductOrderState(order_state_from_items(items))


def service_order_state(items: Iterable[ServiceOrderItemState]) -> ServiceOrderState:
    return ServiceOrderState(order_state_from_items(items))


def resource_order_state(items: Iterable[ResourceOrderItemState]) -> ResourceOrderState:
    return ResourceOrderState(order_state_from_items(items))
