"""The ServiceOrder aggregate, pure: lifecycle, cancellation, replay, and TMF641-valid notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strowger.components.decomposition import Catalog, decompose
from strowger.components.ordering.consumers import product_order_reference
from strowger.components.ordering.states import ServiceOrderState
from strowger.components.sample_catalog import sample_documents
from strowger.components.service_ordering.aggregate import ServiceOrder, ServiceOrderStateChanged
from strowger.components.service_ordering.saga import fulfilment_data, lock_keys
from strowger.components.service_ordering.service import ServiceOrdering, _describe
from strowger.errors import InvalidStateTransition
from strowger.events.registry import EventValidator
from strowger.events.schemas import builtin_schemas

NOW = datetime(2025, 3, 1, tzinfo=UTC)
PRODUCT_ORDER: dict[str, Any] = {
    "id": "PO-1",
    "href": "/tmf-api/productOrderingManagement/v4/productOrder/PO-1",
    "state": "inProgress",
    "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
    "relatedParty": [{"id": "CUST-1", "role": "Customer"}],
}


def document() -> dict[str, Any]:
    plans = [
        decompose(item, Catalog.from_documents(sample_documents()))
        for item in PRODUCT_ORDER["productOrderItem"]
    ]
    som = ServiceOrdering.__new__(ServiceOrdering)
    som.base_path = "/tmf-api/serviceOrdering/v4"
    return som._document("SO-1", PRODUCT_ORDER, plans)


def new_order() -> ServiceOrder:
    return ServiceOrder.create("SO-1", document(), NOW, correlation_id="corr-1")


def replayed(order: ServiceOrder) -> ServiceOrder:
    copy = ServiceOrder(order.id)
    for event in order.pending:
        copy.apply(event)
    return copy


def test_a_new_order_is_acknowledged_and_names_its_product_order() -> None:
    order = new_order()
    assert order.state is ServiceOrderState.ACKNOWLEDGED
    assert {item["state"] for item in order.document["serviceOrderItem"]} == {"acknowledged"}
    assert product_order_reference(order.to_tmf()) == ("PO-1", ["1"])
    assert order.document["orderDate"] == "2025-03-01T00:00:00Z" or order.document["orderDate"].startswith(
        "2025-03-01"
    )


def test_completion_moves_order_and_items_and_sets_the_completion_date() -> None:
    order = new_order()
    order.start(NOW)
    order.conclude(ServiceOrderState.COMPLETED, NOW + timedelta(minutes=1))
    tmf = order.to_tmf()
    assert tmf["state"] == "completed"
    assert {item["state"] for item in tmf["serviceOrderItem"]} == {"completed"}
    assert tmf["completionDate"] and tmf["startDate"]
    order.conclude(ServiceOrderState.FAILED, NOW)  # already final: nothing changes
    assert order.state is ServiceOrderState.COMPLETED


def test_failure_keeps_the_reason_as_an_error_message() -> None:
    order = new_order()
    order.start(NOW)
    order.conclude(ServiceOrderState.FAILED, NOW, "step activate failed: no port")
    assert order.to_tmf()["errorMessage"]["reason"] == "step activate failed: no port"


def test_cancellation_goes_through_assessing_and_pending_and_closes_the_task() -> None:
    order = new_order()
    order.start(NOW)
    task = order.request_cancellation("T-1", href="/t/T-1", reason="moved house", requested=None, now=NOW)
    assert task["state"] == "inProgress"
    assert order.state is ServiceOrderState.ASSESSING_CANCELLATION
    with pytest.raises(InvalidStateTransition):
        order.request_cancellation("T-2", href="/t/T-2", reason="again", requested=None, now=NOW)
    order.conclude(ServiceOrderState.CANCELLED, NOW, "saga words")
    states = [c.order["state"] for c in order.take_changes() if isinstance(c.event, ServiceOrderStateChanged)]
    assert states[-3:] == ["assessingCancellation", "pendingCancellation", "cancelled"]
    assert order.cancel_tasks["T-1"]["state"] == "done"
    assert order.to_tmf()["cancellationReason"] == "moved house"


def test_an_outcome_other_than_cancelled_refuses_a_pending_cancellation() -> None:
    order = new_order()
    order.start(NOW)
    order.request_cancellation("T-1", href="/t/T-1", reason="r", requested=None, now=NOW)
    order.conclude(ServiceOrderState.COMPLETED, NOW)
    assert order.state is ServiceOrderState.COMPLETED
    assert order.cancel_tasks["T-1"]["state"] == "terminatedWithError"


def test_a_final_order_cannot_be_cancelled() -> None:
    order = new_order()
    order.conclude(ServiceOrderState.COMPLETED, NOW)
    with pytest.raises(InvalidStateTransition):
        order.request_cancellation("T-1", href="/t", reason="late", requested=None, now=NOW)


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    order = new_order()
    order.start(NOW)
    order.request_cancellation("T-1", href="/t/T-1", reason="r", requested="2025-03-02T00:00:00Z", now=NOW)
    order.conclude(ServiceOrderState.CANCELLED, NOW)
    again = replayed(order)
    assert again.to_tmf() == order.to_tmf()
    assert again.cancel_tasks == order.cancel_tasks
    assert again.correlation_id == "corr-1"


def test_every_notification_matches_the_tmf641_event_schema() -> None:
    schemas = builtin_schemas()
    order = new_order()
    order.start(NOW)
    order.request_cancellation("T-1", href="/t/T-1", reason="r", requested=None, now=NOW)
    order.conclude(ServiceOrderState.CANCELLED, NOW)
    failed = new_order()
    failed.conclude(ServiceOrderState.FAILED, NOW, "boom")
    checked = 0
    for change in [*order.take_changes(), *failed.take_changes()]:
        event_type, payload = _describe(change)
        validator = EventValidator(event_type, 1, schemas[(event_type, 1)])
        validator.validate(
            {"eventId": "e", "eventTime": "2025-03-01T00:00:00Z", "eventType": event_type, "event": payload}
        )
        checked += 1
    assert checked >= 8


def test_lock_keys_name_the_product_and_its_services() -> None:
    plans = [
        decompose(item, Catalog.from_documents(sample_documents()))
        for item in PRODUCT_ORDER["productOrderItem"]
    ]
    keys = lock_keys(fulfilment_data("SO-1", PRODUCT_ORDER, plans))
    assert keys[0] == "product:PO-1-1"
    assert "service:PO-1-1-SS-CFS-FIBRE-INTERNET" in keys
