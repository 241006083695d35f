from __future__ import annotations

import itertools
import json
from enum import StrEnum
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strowger.tmf
from strowger.components.ordering.states import (
    CANCEL_TASK,
    MACHINES,
    PRODUCT_ORDER,
    PRODUCT_ORDER_ITEM,
    RESOURCE_ORDER_ITEM,
    SERVICE_ORDER_ITEM,
    OrderItemAction,
    ProductOrderItemState,
    ProductOrderState,
    ResourceOrderItemState,
    ResourceOrderState,
    ServiceOrderItemState,
    ServiceOrderState,
    StateMachine,
    TaskState,
    UnknownState,
    can_transition,
    order_state_from_items,
    product_order_state,
    service_order_state,
    transition,
)
from strowger.errors import InvalidStateTransition, PermanentError

SPECS = Path(strowger.tmf.__file__).resolve().parent / "specs" / "v4"  # shipped with the package

# The TMF622 user-guide lifecycle, written out independently of the module under test.
EXPECTED_ORDER_MOVES = {
    "acknowledged": {"inProgress", "pending", "held", "rejected", "assessingCancellation"},
    "inProgress": {"completed", "failed", "partial", "pending", "held", "assessingCancellation"},
    "pending": {"inProgress", "assessingCancellation"},
    "held": {"inProgress", "assessingCancellation"},
    "assessingCancellation": {"pendingCancellation", "acknowledged", "inProgress", "pending", "held"},
    "pendingCancellation": {"cancelled"},
    "completed": set(),
    "failed": set(),
    "partial": set(),
    "rejected": set(),
    "cancelled": set(),
}
EXPECTED_TASK_MOVES = {
    "accepted": {"inProgress", "done", "terminatedWithError"},
    "inProgress": {"done", "terminatedWithError"},
    "done": set(),
    "terminatedWithError": set(),
}

ORDER_MACHINES = [machine for machine in MACHINES.values() if machine is not CANCEL_TASK]


@pytest.mark.parametrize(
    ("swagger", "definition", "states"),
    [
        ("TMF622-ProductOrdering-v4.0.0", "ProductOrderStateType", ProductOrderState),
        ("TMF622-ProductOrdering-v4.0.0", "ProductOrderItemStateType", ProductOrderItemState),
        ("TMF622-ProductOrdering-v4.0.0", "TaskStateType", TaskState),
        ("TMF622-ProductOrdering-v4.0.0", "OrderItemActionType", OrderItemAction),
        ("TMF641-ServiceOrdering-v4.0.0", "ServiceOrderStateType", ServiceOrderState),
        ("TMF641-ServiceOrdering-v4.1.0", "ServiceOrderItemStateType", ServiceOrderItemState),
        ("TMF652-ResourceOrder-v4.0.0", "ResourceOrderStateType", ResourceOrderState),
        ("TMF652-ResourceOrder-v4.0.0", "ResourceOrderItemStateType", ResourceOrderItemState),
        ("TMF652-ResourceOrder-v4.0.0", "TaskStateType", TaskState),
    ],
)
def test_enumerations_are_spelled_as_the_spec_spells_them(
    swagger: str, definition: str, states: type[StrEnum]
) -> None:
    path = SPECS / f"{swagger}.swagger.json"
    spec = json.loads(path.read_text())
    assert [member.value for member in states] == spec["definitions"][definition]["enum"]


@pytest.mark.parametrize("machine", ORDER_MACHINES, ids=lambda machine: machine.entity)
def test_order_machines_allow_exactly_the_tmf_lifecycle(machine: StateMachine[StrEnum]) -> None:
    for source, target in itertools.product(machine.states, repeat=2):
        expected = target.value in EXPECTED_ORDER_MOVES[source.value]
        assert machine.can_transition(source, target) is expected, (source.value, target.value)


def test_cancel_task_machine_follows_task_state_type() -> None:
    for source, target in itertools.product(TaskState, repeat=2):
        expected = target.value in EXPECTED_TASK_MOVES[source.value]
        assert CANCEL_TASK.can_transition(source, target) is expected, (source.value, target.value)
    assert CANCEL_TASK.initial is TaskState.ACCEPTED
    assert CANCEL_TASK.terminal_states == {TaskState.DONE, TaskState.TERMINATED_WITH_ERROR}


def test_terminal_states() -> None:
    assert PRODUCT_ORDER.terminal_states == {
        ProductOrderState.COMPLETED,
        ProductOrderState.FAILED,
        ProductOrderState.PARTIAL,
        ProductOrderState.REJECTED,
        ProductOrderState.CANCELLED,
    }
    assert ProductOrderItemState.COMPLETED in PRODUCT_ORDER_ITEM.terminal_states
    assert "partial" not in {state.value for state in PRODUCT_ORDER_ITEM.states}
    assert ServiceOrderItemState.PARTIAL in SERVICE_ORDER_ITEM.terminal_states
    assert SERVICE_ORDER_ITEM.can_transition("inProgress", "partial")
    assert not RESOURCE_ORDER_ITEM.is_terminal(ResourceOrderItemState.HELD)


def test_every_machine_starts_acknowledged_except_tasks() -> None:
    for machine in ORDER_MACHINES:
        assert machine.initial.value == "acknowledged"


def test_cancellation_goes_through_assessment() -> None:
    state = ProductOrderState.IN_PROGRESS
    for step in ("assessingCancellation", "pendingCancellation", "cancelled"):
        state = transition(state, step)
    assert state is ProductOrderState.CANCELLED
    assert not can_transition(ProductOrderState.ACKNOWLEDGED, ProductOrderState.CANCELLED)


@pytest.mark.parametrize(
    ("source", "target", "reason"),
    [
        (ProductOrderState.COMPLETED, "inProgress", "completed is a final state"),
        (ProductOrderState.CANCELLED, "acknowledged", "cancelled is a final state"),
        (ProductOrderState.ACKNOWLEDGED, "completed", "may only become: assessingCancellation, held"),
        (ProductOrderState.PENDING, "completed", "may only become: assessingCancellation, inProgress"),
        (ProductOrderState.PENDING_CANCELLATION, "inProgress", "may only become: cancelled"),
        (ServiceOrderState.HELD, "failed", "serviceOrder cannot go from held to failed"),
        (ResourceOrderItemState.REJECTED, "inProgress", "resourceOrderItem cannot go from rejected"),
        (TaskState.DONE, "inProgress", "cancel task cannot go from done to inProgress"),
    ],
)
def test_illegal_transitions_raise_with_the_reason(source: StrEnum, target: str, reason: str) -> None:
    with pytest.raises(InvalidStateTransition, match=reason) as raised:
        transition(source, target)
    assert isinstance(raised.value, PermanentError)


@given(st.sampled_from(list(ProductOrderState)), st.sampled_from(list(ProductOrderState)))
def test_transition_agrees_with_can_transition(source: ProductOrderState, target: ProductOrderState) -> None:
    if can_transition(source, target):
        assert transition(source, target) is target
    else:
        with pytest.raises(InvalidStateTransition):
            transition(source, target)


def test_misspelled_states_are_reported() -> None:
    with pytest.raises(UnknownState, match="'InProgress' is not a productOrder state"):
        PRODUCT_ORDER.can_transition("acknowledged", "InProgress")
    with pytest.raises(UnknownState):
        PRODUCT_ORDER_ITEM.transition("inProgress", "partial")


@pytest.mark.parametrize(
    ("items", "order"),
    [
        (["completed", "completed"], "completed"),
        (["failed", "failed"], "failed"),
        (["completed", "failed"], "partial"),
        (["completed", "cancelled"], "partial"),
        (["failed", "rejected"], "failed"),
        (["rejected"], "rejected"),
        (["cancelled", "cancelled"], "cancelled"),
        (["cancelled", "rejected"], "cancelled"),
        (["acknowledged", "acknowledged"], "acknowledged"),
        (["acknowledged", "inProgress"], "inProgress"),
        (["completed", "acknowledged"], "inProgress"),
        (["completed", "held"], "held"),
        (["pending", "held"], "held"),
        (["pending", "acknowledged"], "pending"),
        (["inProgress", "held", "pending"], "inProgress"),
        (["assessingCancellation", "pendingCancellation"], "assessingCancellation"),
        (["pendingCancellation", "completed"], "pendingCancellation"),
        (["pendingCancellation", "inProgress"], "inProgress"),
    ],
)
def test_order_state_from_item_states(items: list[str], order: str) -> None:
    assert order_state_from_items(items) == order


def test_typed_order_state_rules() -> None:
    items = [ProductOrderItemState.COMPLETED, ProductOrderItemState.FAILED]
    assert product_order_state(items) is ProductOrderState.PARTIAL
    partial_service = [ServiceOrderItemState.PARTIAL, ServiceOrderItemState.COMPLETED]
    assert service_order_state(partial_service) is ServiceOrderState.PARTIAL
    with pytest.raises(ValueError, match="at least one item"):
        order_state_from_items([])


@given(st.lists(st.sampled_from(list(ProductOrderItemState)), min_size=1, max_size=6))
def test_derived_order_state_is_always_a_valid_order_state(items: list[ProductOrderItemState]) -> None:
    order = product_order_state(items)
    item_final = all(PRODUCT_ORDER_ITEM.is_terminal(item) for item in items)
    assert PRODUCT_ORDER.is_terminal(order) is item_final
