"""The Rust first pass must never call valid what jsonschema calls invalid (events/fastcheck.py)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest
from jsonschema import Draft4Validator, Draft7Validator, FormatChecker

from strowger.demo.orders import OrderGenerator
from strowger.events.envelope import is_date_time
from strowger.events.fastcheck import certainly_valid_schema, quick_check
from strowger.events.registry import InvalidSchema, parse_schema
from strowger.tmf.errors import BadRequest
from strowger.tmf.resources import schema_validator

TMF622 = "specs/v4/TMF622-ProductOrdering-v4.0.0.swagger.json"


def tmf622_definitions() -> dict[str, Any]:
    text = files("strowger.tmf").joinpath(TMF622).read_text(encoding="utf-8")
    definitions: dict[str, Any] = json.loads(text)["definitions"]
    return definitions


def order_create_schema() -> dict[str, Any]:
    return {"$ref": "#/definitions/ProductOrder_Create", "definitions": tmf622_definitions()}


def documents() -> list[Any]:
    """Valid orders and, for each, mutations that break a type, an enum, a required field or a nested $ref."""
    valid = OrderGenerator(seed=7).order()
    wrong_type = {**valid, "category": 12}
    wrong_enum = {**valid, "productOrderItem": [{**valid["productOrderItem"][0], "action": "explode"}]}
    missing_required = {key: value for key, value in valid.items() if key != "productOrderItem"}
    nested_wrong = {**valid, "relatedParty": [{"id": 5, "role": "Customer", "@referredType": "Individual"}]}
    not_an_object: Any = ["productOrder"]
    return [valid, wrong_type, wrong_enum, missing_required, nested_wrong, not_an_object, {}]


@pytest.mark.parametrize("index", range(len(documents())))
def test_the_rust_check_agrees_with_jsonschema_on_tmf622_orders(index: int) -> None:
    schema = order_create_schema()
    document = documents()[index]
    assert quick_check(schema, Draft4Validator)(document) == Draft4Validator(schema).is_valid(document)


def test_a_valid_order_is_certainly_valid_so_jsonschema_is_not_needed() -> None:
    assert quick_check(order_create_schema(), Draft4Validator)(OrderGenerator(seed=1).order()) is True


def test_formats_are_not_asserted_as_jsonschema_does_without_a_format_checker() -> None:
    schema = {"type": "object", "properties": {"at": {"type": "string", "format": "date-time"}}}
    document = {"at": "yesterday-ish"}
    assert Draft7Validator(schema).is_valid(document)
    assert quick_check(schema, Draft7Validator)(document) is True


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-03-15T09:00:00Z", True),
        ("2026-03-15T09:00:00.123+02:00", True),
        ("2020-12-31T23:59:59:999Z", True),  # as a TMF678 sample writes it: Python reads it
        ("2022-07-04T08:00.000Z", True),  # as a TMF639 sample writes it
        ("2026-03-15T09:00", True),
        ("yesterday", False),
        ("2026-13-01T00:00:00Z", False),
        ("", False),
        (12, False),  # a type error, left to "type"
    ],
)
def test_a_named_format_is_asserted_alike_by_both_passes(value: Any, valid: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"at": {"type": "string", "format": "date-time"}, "link": {"format": "uri"}},
    }
    document = {"at": value, "link": "/relative/href"}  # uri stays unasserted: TMF hrefs are relative
    checker = FormatChecker(formats=())
    checker.checks("date-time")(is_date_time)
    assert Draft4Validator(schema, format_checker=checker).is_valid(document) is valid
    assert quick_check(schema, Draft4Validator, {"date-time": is_date_time})(document) is valid


def test_a_tmf_resource_date_time_is_refused_naming_the_field() -> None:
    validate = schema_validator(tmf622_definitions(), "ProductOrder_Create")
    order = OrderGenerator(seed=3).order()
    with pytest.raises(BadRequest, match="requestedStartDate: 'soon' is not a 'date-time'"):
        validate({**order, "requestedStartDate": "soon"})


def test_a_value_that_is_not_json_is_left_to_jsonschema() -> None:
    check = quick_check({"type": "object", "properties": {"at": {"type": "string"}}}, Draft7Validator)
    assert check({"at": object()}) is False


def test_a_schema_rust_cannot_compile_defers_every_document() -> None:
    check = quick_check({"type": 12}, Draft7Validator)
    assert check({}) is False
    assert check(1) is False


def test_an_invalid_document_still_gets_the_detailed_error_naming_the_field() -> None:
    validate = schema_validator(tmf622_definitions(), "ProductOrder_Create")
    order = OrderGenerator(seed=3).order()
    validate(order)
    with pytest.raises(BadRequest, match="productOrderItem is required"):
        validate({key: value for key, value in order.items() if key != "productOrderItem"})


def test_a_schema_declaring_its_draft_is_checked_against_that_meta_schema() -> None:
    draft7 = "http://json-schema.org/draft-07/schema#"
    assert certainly_valid_schema({"$schema": draft7, "type": "object"})
    assert not certainly_valid_schema({"$schema": draft7, "type": 12})
    assert not certainly_valid_schema({"type": "object"}), "no declared draft: jsonschema decides"


def test_the_registry_still_refuses_an_invalid_schema_with_its_path() -> None:
    with pytest.raises(InvalidSchema, match="Invalid schema at"):
        parse_schema({"$schema": "http://json-schema.org/draft-07/schema#", "type": 12})
