"""The pure parts of event sourcing: aggregates, domain events and upcasters (no I/O)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from strowger.errors import UnknownEventVersion
from strowger.store.aggregate import Aggregate, DomainEvent
from strowger.store.eventstore import StoredEvent
from strowger.store.upcasting import Upcasters


@dataclass(frozen=True)
class Ordered(DomainEvent):
    sku: str
    quantity: int


@dataclass(frozen=True)
class Cancelled(DomainEvent):
    event_type = "OrderCancelled"
    schema_version = 3
    reason: str


class Order(Aggregate):
    event_types = (Ordered, Cancelled)
    stream_type = "productOrder"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.lines: dict[str, int] = {}
        self.state = "acknowledged"

    def order(self, sku: str, quantity: int) -> None:
        if self.state == "cancelled":
            raise ValueError("cancelled orders take no lines")
        self.record(Ordered(sku=sku, quantity=quantity))

    def cancel(self, reason: str) -> None:
        self.record(Cancelled(reason=reason))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case Ordered(sku=sku, quantity=quantity):
                self.lines[sku] = self.lines.get(sku, 0) + quantity
            case Cancelled():
                self.state = "cancelled"


def stored(event_type: str, schema_version: int, payload: dict[str, Any], version: int = 1) -> StoredEvent:
    return StoredEvent(
        stream_id="productOrder-1",
        version=version,
        position=version,
        event_id=f"e{version}",
        event_type=event_type,
        schema_version=schema_version,
        recorded_at=datetime(2024, 1, 1, tzinfo=UTC),
        correlation_id=None,
        causation_id=None,
        payload=payload,
    )


def test_recorded_events_change_state_and_wait_to_be_saved() -> None:
    order = Order("1")
    order.order("sim", 1)
    order.order("sim", 2)
    order.cancel("customer")
    assert (order.lines, order.state, order.version) == ({"sim": 3}, "cancelled", 3)
    assert order.pending == (Ordered("sim", 1), Ordered("sim", 2), Cancelled("customer"))
    with pytest.raises(ValueError, match="cancelled"):
        order.order("sim", 1)
    assert order.version == 3  # a refused command records nothing


def test_domain_events_are_immutable_and_name_themselves() -> None:
    event = Ordered(sku="sim", quantity=1)
    with pytest.raises(FrozenInstanceError):
        event.sku = "esim"  # type: ignore[misc]
    assert (Ordered.event_type, Ordered.schema_version) == ("Ordered", 1)
    assert (Cancelled.event_type, Cancelled.schema_version) == ("OrderCancelled", 3)
    assert Ordered.from_payload(event.to_payload()) == event


def test_stream_names_use_the_stream_type() -> None:
    assert Order.stream_of("42") == "productOrder-42"

    class Plain(Order):
        stream_type = ""

    assert Plain.stream_of("42") == "Plain-42"


def test_state_is_the_fold_of_the_decoded_history() -> None:
    replayed = Order("1")
    for item in (
        stored("Ordered", 1, {"sku": "sim", "quantity": 2}),
        stored("OrderCancelled", 3, {"reason": "x"}),
    ):
        replayed.apply(Order.decode(item))
    assert (replayed.lines, replayed.state) == ({"sim": 2}, "cancelled")


def test_decoding_an_unknown_type_or_version_is_a_permanent_error() -> None:
    with pytest.raises(UnknownEventVersion, match="Shipped"):
        Order.decode(stored("Shipped", 1, {}))
    with pytest.raises(UnknownEventVersion, match="upcaster"):
        Order.decode(stored("OrderCancelled", 2, {"reason": "x"}))


def test_snapshot_state_round_trips_without_identity_or_pending_events() -> None:
    order = Order("1")
    order.order("sim", 2)
    state = order.snapshot_state()
    assert state == {"lines": {"sim": 2}, "state": "acknowledged"}
    restored = Order("1")
    restored.restore_state(state)
    assert (restored.lines, restored.state, restored.pending) == ({"sim": 2}, "acknowledged", ())


def test_upcasters_chain_from_the_stored_version_to_the_newest() -> None:
    upcasters = Upcasters()

    @upcasters.register("OrderCancelled", 1)
    def add_reason(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "reason": "unknown"}

    upcasters.add("OrderCancelled", 2, lambda payload: {"reason": payload["reason"].upper()})
    assert upcasters.upcast("OrderCancelled", 1, {}) == (3, {"reason": "UNKNOWN"})
    assert upcasters.upcast("OrderCancelled", 2, {"reason": "x"}) == (3, {"reason": "X"})
    assert upcasters.upcast("OrderCancelled", 3, {"reason": "x"}) == (3, {"reason": "x"})
    assert upcasters.upcast("Ordered", 1, {"sku": "a"}) == (1, {"sku": "a"})
    assert Order.decode(stored("OrderCancelled", *upcasters.upcast("OrderCancelled", 1, {}))) == Cancelled(
        "UNKNOWN"
    )


def test_a_second_upcaster_for_the_same_step_is_refused() -> None:
    upcasters = Upcasters()
    upcasters.add("Ordered", 1, dict)
    with pytest.raises(ValueError, match="already registered"):
        upcasters.add("Ordered", 1, dict)
