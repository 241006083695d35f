from __future__ import annotations

import copy
from typing import Any

import pytest

from strowger.components.decomposition import (
    ActivationStep,
    Catalog,
    InvalidCatalog,
    InvalidCharacteristic,
    OfferingNotOrderable,
    Operation,
    ServiceKind,
    UnknownOffering,
    decompose,
)
from strowger.components.ordering.states import OrderItemAction
from strowger.components.resource_ordering.pools import pool_from_data
from strowger.components.sample_catalog import sample_catalog, sample_documents
from strowger.errors import PermanentError

CATALOG = sample_catalog()


def item(offering: str, action: str = "add", item_id: str = "1", **characteristics: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "action": action,
        "productOffering": {"id": offering, "@referredType": "ProductOffering"},
        "product": {"productCharacteristic": [{"name": k, "value": v} for k, v in characteristics.items()]},
        "@type": "ProductOrderItem",
    }


def pools_of(plan_resources: Any) -> list[tuple[str | None, str | None]]:
    return [(resource.pool_type, resource.pool_scope) for resource in plan_resources]


def test_fibre_decomposes_into_access_line_then_ip_access_then_internet() -> None:
    plan = decompose(item("PO-FIBRE-500", oltId="OLT-AMS-02"), CATALOG)
    assert [s.spec_id for s in plan.services] == [
        "SS-RFS-ACCESS-LINE",
        "SS-RFS-IP-ACCESS",
        "SS-CFS-FIBRE-INTERNET",
    ]
    assert [s.kind for s in plan.services] == [ServiceKind.RFS, ServiceKind.RFS, ServiceKind.CFS]
    assert plan.service("SS-RFS-IP-ACCESS").depends_on == ("1/SS-RFS-ACCESS-LINE",)
    assert pools_of(plan.resources) == [
        ("olt-port", "OLT-AMS-02"),
        ("cpe", None),
        ("vlan", None),
        ("ipv4", "residential"),
    ]
    assert dict(plan.service("SS-CFS-FIBRE-INTERNET").characteristics) == {"downloadSpeed": 500}
    assert plan.action is OrderItemAction.ADD


def test_add_steps_allocate_before_activating_each_service_in_dependency_order() -> None:
    plan = decompose(item("PO-FIBRE-1000"), CATALOG)
    assert plan.steps == (
        ActivationStep(Operation.ALLOCATE, "1/SS-RFS-ACCESS-LINE/RS-OLT-PORT", "RS-OLT-PORT"),
        ActivationStep(Operation.ALLOCATE, "1/SS-RFS-ACCESS-LINE/RS-CPE", "RS-CPE"),
        ActivationStep(Operation.ACTIVATE, "1/SS-RFS-ACCESS-LINE", "SS-RFS-ACCESS-LINE"),
        ActivationStep(Operation.ALLOCATE, "1/SS-RFS-IP-ACCESS/RS-VLAN", "RS-VLAN"),
        ActivationStep(Operation.ALLOCATE, "1/SS-RFS-IP-ACCESS/RS-IPV4", "RS-IPV4"),
        ActivationStep(Operation.ACTIVATE, "1/SS-RFS-IP-ACCESS", "SS-RFS-IP-ACCESS"),
        ActivationStep(Operation.ACTIVATE, "1/SS-CFS-FIBRE-INTERNET", "SS-CFS-FIBRE-INTERNET"),
    )
    assert dict(plan.service("SS-RFS-IP-ACCESS").characteristics) == {"downloadSpeed": 1000}
    assert plan.resources[0].pool_scope is None  # no OLT known yet: the ROM picks a pool of the type


def test_mobile_plan_allocates_msisdn_and_imsi_and_configures_the_apn() -> None:
    plan = decompose(item("PO-MOBILE-20", simType="eSIM"), CATALOG)
    assert [s.spec_id for s in plan.services] == [
        "SS-RFS-HSS-SUBSCRIBER",
        "SS-RFS-PDN-PROFILE",
        "SS-CFS-MOBILE",
    ]
    assert pools_of(plan.resources) == [("msisdn", None), ("imsi", None), (None, None)]
    allocations = [step.spec_id for step in plan.steps if step.operation is Operation.ALLOCATE]
    assert allocations == ["RS-MSISDN", "RS-SIM"]  # the APN profile is configuration, not pooled
    assert dict(plan.service("SS-CFS-MOBILE").characteristics) == {"dataAllowance": "20GB"}


def test_static_ip_add_on_takes_an_address_from_the_static_pool() -> None:
    plan = decompose(item("PO-STATIC-IP"), CATALOG)
    assert [s.spec_id for s in plan.services] == ["SS-RFS-STATIC-ROUTE", "SS-CFS-STATIC-IP"]
    assert pools_of(plan.resources) == [("ipv4", "static")]


def test_a_bundle_decomposes_into_its_components() -> None:
    plan = decompose(item("PO-BUNDLE-FIBRE-MOBILE", item_id="7", oltId="OLT-AMS-01"), CATALOG)
    assert plan.offering_id == "PO-BUNDLE-FIBRE-MOBILE"
    assert {(s.order_item_id, s.offering_id) for s in plan.services} == {
        ("7.1", "PO-FIBRE-500"),
        ("7.2", "PO-MOBILE-20"),
    }
    assert [r.pool_type for r in plan.resources] == [
        "olt-port",
        "cpe",
        "vlan",
        "ipv4",
        "msisdn",
        "imsi",
        None,
    ]
    assert plan.resources[0].pool_scope == "OLT-AMS-01"
    assert len([s for s in plan.steps if s.operation is Operation.ACTIVATE]) == 6


def test_a_bundle_with_component_items_uses_their_actions() -> None:
    bundle = item("PO-BUNDLE-FIBRE-MOBILE", action="modify", item_id="B")
    bundle["productOrderItem"] = [
        item("PO-FIBRE-500", action="noChange", item_id="B1"),
        item("PO-MOBILE-20", action="delete", item_id="B2"),
    ]
    plan = decompose(bundle, CATALOG)
    assert {s.order_item_id: s.action for s in plan.services} == {
        "B1": OrderItemAction.NO_CHANGE,
        "B2": OrderItemAction.DELETE,
    }
    assert all(step.target.startswith("B2/") for step in plan.steps)


def test_delete_deactivates_dependents_first_then_releases_their_resources() -> None:
    plan = decompose(item("PO-MOBILE-20", action="delete"), CATALOG)
    assert [(step.operation, step.spec_id) for step in plan.steps] == [
        (Operation.DEACTIVATE, "SS-CFS-MOBILE"),
        (Operation.DEACTIVATE, "SS-RFS-PDN-PROFILE"),
        (Operation.DEACTIVATE, "SS-RFS-HSS-SUBSCRIBER"),
        (Operation.RELEASE, "RS-MSISDN"),
        (Operation.RELEASE, "RS-SIM"),
    ]


def test_modify_changes_services_without_reallocating() -> None:
    plan = decompose(item("PO-MOBILE-20", action="modify"), CATALOG)
    assert [(step.operation, step.spec_id) for step in plan.steps] == [
        (Operation.MODIFY, "SS-RFS-HSS-SUBSCRIBER"),
        (Operation.MODIFY, "SS-RFS-PDN-PROFILE"),
        (Operation.MODIFY, "SS-CFS-MOBILE"),
    ]


def test_no_change_items_have_nothing_to_do() -> None:
    plan = decompose(item("PO-FIBRE-500", action="noChange"), CATALOG)
    assert plan.steps == ()
    assert {s.action for s in plan.services} == {OrderItemAction.NO_CHANGE}


def test_an_unknown_offering_is_a_permanent_error_with_the_reason() -> None:
    with pytest.raises(UnknownOffering, match="'PO-NOPE' is not in the catalog") as raised:
        decompose(item("PO-NOPE"), CATALOG)
    assert isinstance(raised.value, PermanentError)
    with pytest.raises(UnknownOffering, match="names no productOffering"):
        decompose({"id": "1", "action": "add"}, CATALOG)


@pytest.mark.parametrize(
    ("offering", "name", "value", "message"),
    [
        ("PO-FIBRE-500", "downloadSpeed", 1000, "downloadSpeed=1000 is not allowed .* 'PO-FIBRE-500' .*500"),
        ("PO-MOBILE-20", "simType", "nano", "simType='nano' is not allowed"),
        ("PO-MOBILE-20", "colour", "red", "has no characteristic 'colour'"),
    ],
)
def test_characteristics_are_checked_against_the_catalog(
    offering: str, name: str, value: Any, message: str
) -> None:
    with pytest.raises(InvalidCharacteristic, match=message):
        decompose(item(offering, **{name: value}), CATALOG)


def test_a_retired_offering_cannot_be_added_but_can_be_deleted() -> None:
    documents = sample_documents()
    for offering in documents["productOffering"]:
        if offering["id"] == "PO-FIBRE-500":
            offering["lifecycleStatus"] = "Retired"
    catalog = Catalog.from_documents(documents)
    with pytest.raises(OfferingNotOrderable, match="Retired"):
        decompose(item("PO-FIBRE-500"), catalog)
    assert decompose(item("PO-FIBRE-500", action="delete"), catalog).steps


def test_catalog_errors_name_the_broken_reference_or_cycle() -> None:
    documents = sample_documents()
    services = {spec["id"]: spec for spec in documents["serviceSpecification"]}
    access_line = services["SS-RFS-ACCESS-LINE"]
    access_line["serviceSpecRelationship"] = [{"id": "SS-RFS-IP-ACCESS", "relationshipType": "dependency"}]
    with pytest.raises(
        InvalidCatalog, match="cycle: SS-RFS-ACCESS-LINE → SS-RFS-IP-ACCESS → SS-RFS-ACCESS-LINE"
    ):
        decompose(item("PO-FIBRE-500"), Catalog.from_documents(documents))
    broken = copy.deepcopy(sample_documents())
    broken["resourceSpecification"] = [r for r in broken["resourceSpecification"] if r["id"] != "RS-CPE"]
    with pytest.raises(InvalidCatalog, match="'SS-RFS-ACCESS-LINE' refers to resourceSpecification 'RS-CPE'"):
        decompose(item("PO-FIBRE-500"), Catalog.from_documents(broken))


def test_decomposition_reads_the_catalog_not_the_code() -> None:
    documents = sample_documents()
    fibre = next(spec for spec in documents["serviceSpecification"] if spec["id"] == "SS-RFS-ACCESS-LINE")
    fibre["resourceSpecification"] = [
        {"id": "RS-CPE"}
    ]  # an operator that reuses the OLT port of a copper line
    plan = decompose(item("PO-FIBRE-500"), Catalog.from_documents(documents))
    assert [r.spec_id for r in plan.service("SS-RFS-ACCESS-LINE").resources] == ["RS-CPE"]


# -- the sample catalog itself ---------------------------------------------------------------


def test_every_sample_offering_has_eur_prices_and_resolvable_references() -> None:
    for offering in CATALOG.offerings.values():
        assert offering["lifecycleStatus"] == "Launched"
        assert offering["productOfferingPrice"], offering["id"]
        for price_ref in offering["productOfferingPrice"]:
            price = CATALOG.prices[price_ref["id"]]
            assert price["price"]["unit"] == "EUR"
            assert price["priceType"] in {"recurring", "oneTime", "discount"}
        decompose(item(offering["id"]), CATALOG)  # every offering decomposes
    kinds = {(p["priceType"], p.get("recurringChargePeriodType")) for p in CATALOG.prices.values()}
    assert {("recurring", "month"), ("oneTime", None)} <= kinds


def test_the_bundle_is_a_bundle_of_the_fibre_and_mobile_offerings() -> None:
    bundle = CATALOG.offering("PO-BUNDLE-FIBRE-MOBILE")
    assert bundle["isBundle"] is True
    assert [b["id"] for b in bundle["bundledProductOffering"]] == ["PO-FIBRE-500", "PO-MOBILE-20"]


def test_every_pooled_resource_has_a_pool_of_its_type_and_scope() -> None:
    pools = [pool_from_data(data) for data in CATALOG.pools]
    for offering in CATALOG.offerings.values():
        for resource in decompose(item(offering["id"]), CATALOG).resources:
            if resource.pool_type is None:
                continue
            assert any(
                pool.type == resource.pool_type and resource.pool_scope in (None, pool.scope)
                for pool in pools
            ), resource
    olts = {pool.scope for pool in pools if pool.type == "olt-port"}
    assert olts == {"OLT-AMS-01", "OLT-AMS-02"}
