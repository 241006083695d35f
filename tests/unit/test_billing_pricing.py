"""Pricing a completed order from the sample catalog's TMF620 prices (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from strowger.components.billing.pricing import PriceBook, UnpricedItem, charge_lines
from strowger.components.sample_catalog import sample_documents


def book() -> PriceBook:
    documents = sample_documents()
    return PriceBook.from_documents(documents["productOffering"], documents["productOfferingPrice"])


def order(*items: dict[str, Any], state: str = "completed") -> dict[str, Any]:
    return {"id": "PO-1", "state": state, "billingAccount": {"id": "BA-1"}, "productOrderItem": list(items)}


def item(item_id: str, offering: str, state: str = "completed", action: str = "add") -> dict[str, Any]:
    return {"id": item_id, "action": action, "state": state, "productOffering": {"id": offering}}


def test_a_fibre_order_is_charged_its_monthly_fee_and_its_activation() -> None:
    lines = charge_lines(order(item("1", "PO-FIBRE-500")), book())
    assert {(line.key.price_id, line.key.kind, line.amount) for line in lines} == {
        ("POP-FIBRE-500-MONTHLY", "recurring", Decimal("45.00")),
        ("POP-FIBRE-ACTIVATION", "oneTime", Decimal("49.00")),
    }
    assert {line.rate_type for line in lines} == {"recurringCharge", "oneTimeCharge"}
    assert all(line.billing_account == "BA-1" and line.product_id == "PO-1-1" for line in lines)


def test_a_bundle_is_charged_its_components_and_its_own_discount() -> None:
    lines = charge_lines(order(item("1", "PO-BUNDLE-FIBRE-MOBILE")), book())
    by_key = {(line.key.item_id, line.key.price_id): line.amount for line in lines}
    assert by_key == {
        ("1", "POP-BUNDLE-DISCOUNT"): Decimal("-10.00"),
        ("1/PO-FIBRE-500", "POP-FIBRE-500-MONTHLY"): Decimal("45.00"),
        ("1/PO-FIBRE-500", "POP-FIBRE-ACTIVATION"): Decimal("49.00"),
        ("1/PO-MOBILE-20", "POP-MOBILE-20-MONTHLY"): Decimal("15.00"),
        ("1/PO-MOBILE-20", "POP-MOBILE-ACTIVATION"): Decimal("10.00"),
    }
    assert sum(by_key.values()) == Decimal("109.00")


def test_a_bundle_with_child_items_is_charged_per_child() -> None:
    bundle = item("1", "PO-BUNDLE-FIBRE-MOBILE")
    bundle["productOrderItem"] = [item("1a", "PO-FIBRE-500"), item("1b", "PO-MOBILE-20")]
    item_ids = {line.key.item_id for line in charge_lines(order(bundle), book())}
    assert item_ids == {"1", "1/1a", "1/1b"}


def test_a_partial_order_is_charged_for_its_completed_items_only() -> None:
    partial = order(item("1", "PO-FIBRE-500"), item("2", "PO-STATIC-IP", state="failed"), state="partial")
    assert {line.key.item_id for line in charge_lines(partial, book())} == {"1"}


def test_modify_and_delete_items_are_not_charged() -> None:
    lines = charge_lines(
        order(item("1", "PO-FIBRE-500", action="delete"), item("2", "PO-MOBILE-20", action="modify")), book()
    )
    assert lines == []


def test_the_item_billing_account_wins_and_the_product_id_is_kept() -> None:
    line_item = item("1", "PO-STATIC-IP")
    line_item["billingAccount"] = {"id": "BA-ITEM"}
    line_item["product"] = {"id": "PRD-9"}
    (line,) = charge_lines(order(line_item), book())
    assert (line.billing_account, line.product_id, line.amount) == ("BA-ITEM", "PRD-9", Decimal("5.00"))


def test_an_offering_missing_from_the_catalog_is_a_permanent_error() -> None:
    with pytest.raises(UnpricedItem, match="PO-GONE"):
        charge_lines(order(item("1", "PO-GONE")), book())


def test_a_dangling_price_reference_is_a_permanent_error_but_usage_prices_are_skipped() -> None:
    documents = sample_documents()
    prices = [
        *documents["productOfferingPrice"],
        {"id": "POP-USAGE", "priceType": "usage", "price": {"value": 1}},
    ]
    fibre = next(offering for offering in documents["productOffering"] if offering["id"] == "PO-FIBRE-500")
    fibre["productOfferingPrice"].append({"id": "POP-USAGE"})
    assert len(charge_lines(order(item("1", "PO-FIBRE-500")), PriceBook.from_documents([fibre], prices))) == 2
    fibre["productOfferingPrice"].append({"id": "POP-NOWHERE"})
    with pytest.raises(UnpricedItem, match="POP-NOWHERE"):
        charge_lines(order(item("1", "PO-FIBRE-500")), PriceBook.from_documents([fibre], prices))
