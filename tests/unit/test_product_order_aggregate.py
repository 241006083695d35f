"""The ProductOrder aggregate, pure: message rules, state machine, cancellation, replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strowger.components.ordering.aggregate import (
    InvalidOrder,
    OrderClosed,
    ProductOrder,
    ReadOnlyAttribute,
    check_order_message,
)
from strowger.components.ordering.notifications import notifications
from strowger.errors import InvalidStateTransition

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def body(**extra: Any) -> dict[str, Any]:
    return {
        "productOrderItem": [
            {"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}},
            {"id": "2", "action": "add", "productOffering": {"id": "PO-STATIC-IP"}},
        ],
        **extra,
    }


def placed(**extra: Any) -> ProductOrder:
    return ProductOrder.place("o1", body(**extra), href="/po/o1", now=T0, correlation_id="c1")


def replay(order: ProductOrder) -> ProductOrder:
    """A fresh aggregate folded from everything ``order`` recorded (what a load does)."""
    copy = ProductOrder(order.id)
    for change in order.take_changes():
        copy.apply(change.event)
    return copy


@pytest.mark.parametrize(
    ("message", "field", "missing"),
    [
        ({}, "productOrderItem", True),
        ({"productOrderItem": []}, "productOrderItem", False),
        ({"productOrderItem": [{"action": "add"}]}, "productOrderItem[0].id", True),
        ({"productOrderItem": [{"id": "1"}]}, "productOrderItem[0].action", True),
        ({"productOrderItem": [{"id": "1", "action": "buy"}]}, "productOrderItem[0].action", False),
        ({"productOrderItem": [{"id": "1", "action": ["add"]}]}, "productOrderItem[0].action", False),
        (
            {
                "productOrderItem": [
                    {"id": "1", "action": "add", "productOrderItem": [{"id": "1", "action": "add"}]}
                ]
            },
            "productOrderItem[0].productOrderItem[0].id",
            False,
        ),
        (
            {
                "productOrderItem": [
                    {"id": "1", "action": "add", "productOrderItemRelationship": [{"id": "9"}]}
                ]
            },
            "productOrderItem[0].productOrderItemRelationship[0].id",
            False,
        ),
        (
            {
                "productOrderItem": [
                    {"id": "1", "action": "add", "productOrderItemRelationship": [{"id": "1"}]}
                ]
            },
            "productOrderItem[0].productOrderItemRelationship[0].id",
            False,
        ),
        (
            {"productOrderItem": [{"id": "1", "action": "add", "productOrderItemRelationship": [{}]}]},
            "productOrderItem[0].productOrderItemRelationship[0].id",
            True,
        ),
        (
            {"productOrderItem": [{"id": "1", "action": "add"}], "requestedCompletionDate": "yesterday"},
            "requestedCompletionDate",
            False,
        ),
    ],
)
def test_message_rules_name_the_field(message: dict[str, Any], field: str, missing: bool) -> None:
    with pytest.raises(InvalidOrder) as raised:
        check_order_message(message)
    assert raised.value.field == field
    assert raised.value.missing is missing


def test_the_tmf622_sample_order_passes_the_message_rules() -> None:
    sample = (
        Path(__file__).parents[1]
        / "fixtures/tmf-samples-v4/TMF622_Product_Ordering__ProductOrder.example.json"
    )
    order = json.loads(sample.read_text(encoding="utf-8"))  # relationships to items 110 and 120, nested
    check_order_message({key: value for key, value in order.items() if key not in ("id", "href", "state")})


def test_place_sets_server_attributes_and_acknowledges_everything() -> None:
    order = placed(description="two lines")
    document = order.to_tmf()
    assert document["id"] == "o1" and document["href"] == "/po/o1"
    assert document["state"] == "acknowledged"
    assert document["orderDate"] == "2025-03-01T12:00:00.000Z"
    assert document["@type"] == "ProductOrder"
    assert [item["state"] for item in document["productOrderItem"]] == ["acknowledged", "acknowledged"]
    assert order.correlation_id == "c1" and order.version == 1


def test_place_refuses_server_managed_attributes() -> None:
    with pytest.raises(ReadOnlyAttribute) as raised:
        placed(orderDate="2020-01-01T00:00:00Z")
    assert raised.value.field == "orderDate"


def test_validation_outcomes_move_items_and_order() -> None:
    accepted = placed()
    accepted.start_fulfilment(T0)
    assert accepted.state == "inProgress"
    assert set(accepted.item_states().values()) == {"inProgress"}

    rejected = placed()
    rejected.reject("productOffering 'X' is not in the catalog", T0)
    document = rejected.to_tmf()
    assert document["state"] == "rejected" and document["completionDate"] == "2025-03-01T12:00:00.000Z"
    assert document["note"][-1]["text"] == "productOffering 'X' is not in the catalog"
    assert set(rejected.item_states().values()) == {"rejected"}


def test_fulfilment_results_derive_the_order_state() -> None:
    order = placed()
    order.start_fulfilment(T0)
    order.record_fulfilment(["1"], "completed", T0)
    assert order.state == "inProgress"
    order.record_fulfilment(["2"], "failed", T0)
    assert order.state == "partial"
    assert order.item_states() == {"1": "completed", "2": "failed"}


def test_amend_rules_depend_on_the_state() -> None:
    order = placed()
    order.amend({**order.to_tmf(), "description": "new"}, T0)
    assert order.to_tmf()["description"] == "new"
    with pytest.raises(ReadOnlyAttribute):
        order.amend({**order.to_tmf(), "orderDate": "2020-01-01T00:00:00.000Z"}, T0)
    with pytest.raises(InvalidStateTransition):  # cancellation goes through a task
        order.amend({**order.to_tmf(), "state": "cancelled"}, T0)
    order.start_fulfilment(T0)
    with pytest.raises(OrderClosed):  # items are frozen once fulfilment started
        order.amend({**order.to_tmf(), "productOrderItem": body()["productOrderItem"][:1]}, T0)
    order.amend({**order.to_tmf(), "state": "held"}, T0)
    assert order.state == "held"
    order.amend({**order.to_tmf(), "state": "inProgress"}, T0)
    order.record_fulfilment([], "completed", T0)
    with pytest.raises(OrderClosed):
        order.amend({**order.to_tmf(), "description": "late"}, T0)


def test_cancelling_an_unstarted_order_is_immediate() -> None:
    order = placed()
    task = order.request_cancellation("t1", href="/t/t1", body={"cancellationReason": "dup"}, now=T0)
    assert task["state"] == "done" and task["effectiveCancellationDate"] == "2025-03-01T12:00:00.000Z"
    assert order.state == "cancelled"
    assert order.to_tmf()["cancellationReason"] == "dup"
    assert set(order.item_states().values()) == {"cancelled"}


def test_cancelling_a_started_order_waits_for_fulfilment() -> None:
    order = placed()
    order.start_fulfilment(T0)
    task = order.request_cancellation("t1", href="/t/t1", body={}, now=T0)
    assert task["state"] == "inProgress" and order.state == "assessingCancellation"
    order.record_fulfilment([], "cancelled", T0 + timedelta(minutes=1))
    assert order.state == "cancelled"
    assert order.cancel_tasks["t1"]["state"] == "done"


def test_a_cancellation_overtaken_by_completion_is_refused() -> None:
    order = placed()
    order.start_fulfilment(T0)
    order.request_cancellation("t1", href="/t/t1", body={}, now=T0)
    order.record_fulfilment([], "completed", T0)
    assert order.state == "completed"
    assert order.cancel_tasks["t1"]["state"] == "terminatedWithError"
    assert "cancellation refused" in order.to_tmf()["note"][-1]["text"]


def test_a_second_cancellation_and_cancelling_a_final_order_are_refused() -> None:
    order = placed()
    order.start_fulfilment(T0)
    order.request_cancellation("t1", href="/t/t1", body={}, now=T0)
    with pytest.raises(InvalidStateTransition):
        order.request_cancellation("t2", href="/t/t2", body={}, now=T0)
    done = placed()
    done.reject("no", T0)
    with pytest.raises(OrderClosed):
        done.request_cancellation("t3", href="/t/t3", body={}, now=T0)


def test_only_a_final_order_can_be_deleted() -> None:
    order = placed()
    with pytest.raises(OrderClosed):
        order.delete(T0)
    order.reject("no", T0)
    order.delete(T0)
    assert order.deleted


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    order = placed(description="x")
    order.start_fulfilment(T0)
    order.request_cancellation("t1", href="/t/t1", body={"cancellationReason": "r"}, now=T0)
    order.refuse_cancellation("too late", T0)
    order.record_fulfilment([], "completed", T0)
    expected = order.snapshot_state()
    assert replay(order).snapshot_state() == expected


def test_each_change_becomes_one_tmf_notification_with_the_resource_after_it() -> None:
    order = placed()
    order.start_fulfilment(T0)
    envelopes = notifications(order.take_changes(), correlation_id="c1", causation_id="e0", now=T0)
    assert [envelope.event_type for envelope in envelopes] == [
        "ProductOrderCreateEvent",
        "ProductOrderAttributeValueChangeEvent",
        "ProductOrderStateChangeEvent",
    ]
    assert envelopes[0].payload["productOrder"]["state"] == "acknowledged"
    assert envelopes[1].extra == {"fieldPath": "productOrderItem.state"}
    assert envelopes[2].payload["productOrder"]["state"] == "inProgress"
    assert {envelope.correlation_id for envelope in envelopes} == {"c1"}
    assert {envelope.entity_key for envelope in envelopes} == {"o1"}
