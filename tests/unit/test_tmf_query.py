"""TMF630 query conventions: filters, fields, sort and paging."""

from __future__ import annotations

from typing import Any

import pytest

from strowger.tmf.errors import BadRequest
from strowger.tmf.query import Op, apply_query, parse_condition, parse_query, select_fields

ORDERS: list[dict[str, Any]] = [
    {
        "id": "1",
        "href": "/o/1",
        "@type": "ProductOrder",
        "state": "completed",
        "priority": 2,
        "urgent": True,
        "orderDate": "2024-03-01T10:00:00Z",
        "relatedParty": [{"id": "C", "role": "customer"}, {"id": "S", "role": "seller"}],
        "productOrderItem": [{"id": "a", "state": "completed"}],
    },
    {
        "id": "2",
        "href": "/o/2",
        "state": "inProgress",
        "priority": 10,
        "urgent": False,
        "orderDate": "2024-01-15T08:30:00+01:00",
        "relatedParty": [{"id": "D", "role": "customer"}],
        "productOrderItem": [{"id": "a", "state": "inProgress"}, {"id": "b", "state": "completed"}],
    },
    {"id": "3", "href": "/o/3", "state": "acknowledged", "priority": 5},
]


def ids(params: list[tuple[str, str]]) -> list[str]:
    return [d["id"] for d in apply_query(ORDERS, parse_query(params)).items]


def test_equality_and_comma_or() -> None:
    assert ids([("state", "completed")]) == ["1"]
    assert ids([("state", "completed,acknowledged")]) == ["1", "3"]
    assert ids([("state", "cancelled")]) == []


def test_separate_parameters_are_anded() -> None:
    assert ids([("state", "completed,inProgress"), ("urgent", "false")]) == ["2"]


def test_nested_paths_match_any_array_element() -> None:
    assert ids([("relatedParty.id", "C")]) == ["1"]
    assert ids([("productOrderItem.state", "completed")]) == ["1", "2"]
    assert ids([("relatedParty.role", "seller")]) == ["1"]


def test_numbers_compare_numerically_not_as_text() -> None:
    assert ids([("priority.gt", "4")]) == ["2", "3"]
    assert ids([("priority.lte", "5")]) == ["1", "3"]
    assert ids([("priority", "10")]) == ["2"]


def test_times_compare_chronologically_across_offsets() -> None:
    # 2024-01-15T08:30+01:00 is 07:30Z: before 08:00Z.
    assert ids([("orderDate.lt", "2024-01-15T08:00:00Z")]) == ["2"]
    assert ids([("orderDate.gte", "2024-02-01")]) == ["1"]


@pytest.mark.parametrize(
    "value", ["2024-13-01", "2024-02-30T10:00:00Z", "2024-02-01T25:00", "2024-02-01Tnoon"]
)
def test_a_date_that_is_no_date_is_refused_rather_than_compared_as_text(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_query([("orderDate.gt", value)])
    assert refused.value.field == "orderDate.gt" and "not a date-time" in refused.value.message


def test_partial_dates_and_plain_text_still_compare_as_text() -> None:
    assert ids([("orderDate.gt", "2024-02")]) == ["1"]  # RFC 3339 text orders by its leading fields
    assert ids([("orderDate.lt", "2024")]) == []
    assert ids([("state.gt", "b")]) == ["1", "2"]


@pytest.mark.parametrize(
    ("name", "value", "op", "path", "values"),
    [
        ("priority.gte", "3", Op.GTE, ("priority",), ("3",)),
        ("priority[lt]", "3", Op.LT, ("priority",), ("3",)),
        ("priority>", "3", Op.GTE, ("priority",), ("3",)),  # priority>=3 as a query parser splits it
        ("priority>3", "", Op.GT, ("priority",), ("3",)),
        ("priority<", "3", Op.LTE, ("priority",), ("3",)),
        ("state!", "x,y", Op.NE, ("state",), ("x", "y")),
        ("relatedParty.id", "C", Op.EQ, ("relatedParty", "id"), ("C",)),
    ],
)
def test_operator_forms(
    name: str, value: str, op: Op, path: tuple[str, ...], values: tuple[str, ...]
) -> None:
    condition = parse_condition(name, value)
    assert (condition.op, condition.path, condition.values) == (op, path, values)


def test_not_equal_excludes_every_listed_value() -> None:
    assert ids([("state.ne", "completed,inProgress")]) == ["3"]


def test_booleans_and_missing_attributes() -> None:
    assert ids([("urgent", "true")]) == ["1"]
    assert ids([("unknownAttribute", "x")]) == []


def test_fields_keep_id_href_type_and_project_nested_paths() -> None:
    selected = select_fields(ORDERS[0], parse_query([("fields", "state,relatedParty.role")]).fields)
    assert selected == {
        "id": "1",
        "href": "/o/1",
        "@type": "ProductOrder",
        "state": "completed",
        "relatedParty": [{"role": "customer"}, {"role": "seller"}],
    }
    assert select_fields(ORDERS[0], parse_query([("fields", "none")]).fields) == {
        "id": "1",
        "href": "/o/1",
        "@type": "ProductOrder",
    }


def test_sort_ascending_descending_and_multi_key_with_missing_last() -> None:
    assert ids([("sort", "priority")]) == ["1", "3", "2"]
    assert ids([("sort", "-priority")]) == ["2", "3", "1"]
    assert ids([("sort", "-urgent,priority")]) == ["1", "2", "3"]  # "3" has no urgent: last
    assert ids([("sort", "orderDate")]) == ["2", "1", "3"]


def test_paging_reports_the_total_before_the_window() -> None:
    page = apply_query(ORDERS, parse_query([("sort", "id"), ("offset", "1"), ("limit", "1")]))
    assert [d["id"] for d in page.items] == ["2"]
    assert page.total == 3
    assert apply_query(ORDERS, parse_query([("offset", "5")])).items == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "-1"),
        ("offset", "abc"),
        ("offset", str(2**63)),  # past a 64-bit SQL integer: was a 500 from the database driver
        ("limit", "100000"),
        ("fields", "a..b"),
        ("sort", "-"),
        ("a b", "x"),
    ],
)
def test_bad_parameters_are_bad_requests_naming_them(name: str, value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_query([(name, value)])
    assert caught.value.status == 400
