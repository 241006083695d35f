"""Pure parts of the projections: naming, DDL per generation, the order fold and field extraction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from strowger.components.ordering.aggregate import ProductOrder
from strowger.errors import ConfigError
from strowger.projections.engine import ViewTable
from strowger.projections.orders import OrderListProjection, customer_of, fold, offering_names, order_id_of
from strowger.store.eventstore import StoredEvent

NOW = datetime(2024, 5, 1, tzinfo=UTC)
BODY = {
    "relatedParty": [{"id": "B", "role": "billReceiver"}, {"id": "C1", "name": "Ada", "role": "customer"}],
    "productOrderItem": [
        {"id": "1", "action": "add", "productOffering": {"id": "PO-1", "name": "Fibre"}},
        {"id": "2", "action": "add", "productOffering": {"id": "PO-2"}},
    ],
}


def stored(order: ProductOrder, index: int, version: int) -> StoredEvent:
    event = order.pending[index]
    return StoredEvent(
        stream_id=ProductOrder.stream_of(order.id),
        version=version,
        position=version,
        event_id=f"e{version}",
        event_type=event.event_type,
        schema_version=event.schema_version,
        recorded_at=NOW,
        correlation_id=None,
        causation_id=None,
        payload=event.to_payload(),
    )


def test_table_names_must_be_plain_identifiers() -> None:
    with pytest.raises(ConfigError):
        ViewTable("orders; DROP TABLE x", sqlite="", postgresql="")


def test_each_generation_has_its_own_tables_and_index_names() -> None:
    ddl = OrderListProjection().ddl("sqlite", 3)
    assert ddl[0].startswith("CREATE TABLE IF NOT EXISTS order_list_g3 (")
    assert "CREATE INDEX IF NOT EXISTS order_list_g3_state ON order_list_g3 (state, order_date)" in ddl
    assert (
        OrderListProjection().physical(3).sql("SELECT 1 FROM {order_list}") == "SELECT 1 FROM order_list_g3"
    )


def test_fold_rebuilds_what_the_aggregate_holds() -> None:
    order = ProductOrder.place("O1", BODY, href="/po/O1", now=NOW, correlation_id="c")
    order.start_fulfilment(NOW)
    order.record_fulfilment([], "completed", NOW)
    state = None
    for index in range(len(order.pending)):
        folded = fold("O1", state, stored(order, index, index + 1))
        state = folded.snapshot_state()
    assert folded.to_tmf() == order.to_tmf()
    assert folded.to_tmf()["state"] == "completed"


def test_customer_and_offerings_are_read_from_the_document() -> None:
    assert customer_of(BODY) == ("C1", "Ada")
    assert customer_of({"relatedParty": [{"id": "X", "role": "seller"}]}) == (None, None)
    assert offering_names(BODY) == ["Fibre", "PO-2"]


def test_only_product_order_streams_are_order_events() -> None:
    order = ProductOrder.place("O9", BODY, href="/po/O9", now=NOW, correlation_id="c")
    event = stored(order, 0, 1)
    assert order_id_of(event) == "O9"
    assert order_id_of(StoredEvent(**{**event.__dict__, "stream_id": "Account-O9"})) is None
