"""The compatibility checker: every mode, every kind of breaking change, open content, @type subtypes."""

from __future__ import annotations

from typing import Any

import pytest

from strowger.events.compatibility import Compatibility, check, compare

B, F, FULL, NONE = Compatibility.BACKWARD, Compatibility.FORWARD, Compatibility.FULL, Compatibility.NONE


def obj(props: dict[str, Any], *, required: tuple[str, ...] = (), closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


STR = {"type": "string"}
STATE = {"type": "string", "enum": ["acknowledged", "inProgress", "completed"]}
BASE = obj({"id": STR, "state": STATE, "price": {"type": "number"}, "name": STR}, required=("id",))


def kinds(old: Any, new: Any, mode: Compatibility) -> set[str]:
    return {issue.kind for issue in compare(old, new, mode)}


def with_prop(schema: dict[str, Any], name: str, prop: Any) -> dict[str, Any]:
    return {**schema, "properties": {**schema["properties"], name: prop}}


def without_prop(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != name}}


# (description, old, new, {mode: expected kinds (empty = compatible)})
EVOLUTIONS: list[tuple[str, Any, Any, dict[Compatibility, set[str]]]] = [
    (
        "optional field added (open content)",
        BASE,
        with_prop(BASE, "note", STR),
        {B: set(), F: set(), FULL: set()},
    ),
    (
        "optional field removed (open content)",
        BASE,
        without_prop(BASE, "name"),
        {B: set(), F: set(), FULL: set()},
    ),
    (
        "required field added",
        BASE,
        {**with_prop(BASE, "category", STR), "required": ["id", "category"]},
        {B: {"REQUIRED_FIELD_ADDED"}, F: set(), FULL: {"REQUIRED_FIELD_ADDED"}},
    ),
    (
        "required field removed",
        BASE,
        {**without_prop(BASE, "id"), "required": []},
        {B: set(), F: {"REQUIRED_FIELD_REMOVED"}, FULL: {"REQUIRED_FIELD_REMOVED"}},
    ),
    (
        "number narrowed to integer",
        BASE,
        with_prop(BASE, "price", {"type": "integer"}),
        {B: {"TYPE_NARROWED"}, F: set(), FULL: {"TYPE_NARROWED"}},
    ),
    (
        "integer widened to number",
        with_prop(BASE, "price", {"type": "integer"}),
        BASE,
        {B: set(), F: {"TYPE_WIDENED"}, FULL: {"TYPE_WIDENED"}},
    ),
    (
        "type changed",
        BASE,
        with_prop(BASE, "name", {"type": "boolean"}),
        {B: {"TYPE_CHANGED"}, F: {"TYPE_CHANGED"}, FULL: {"TYPE_CHANGED"}},
    ),
    (
        "string narrowed to enum",
        BASE,
        with_prop(BASE, "name", {"type": "string", "enum": ["a", "b"]}),
        {B: {"NARROWED_TO_ENUM"}, F: set(), FULL: {"NARROWED_TO_ENUM"}},
    ),
    (
        "enum value removed",
        BASE,
        with_prop(BASE, "state", {"type": "string", "enum": ["acknowledged", "completed"]}),
        {B: {"ENUM_VALUE_REMOVED"}, F: set(), FULL: {"ENUM_VALUE_REMOVED"}},
    ),
    (
        "enum value added",
        BASE,
        with_prop(BASE, "state", {**STATE, "enum": [*STATE["enum"], "held"]}),
        {B: set(), F: {"ENUM_VALUE_ADDED"}, FULL: {"ENUM_VALUE_ADDED"}},
    ),
    (
        "maxLength tightened",
        with_prop(BASE, "name", {"type": "string", "maxLength": 80}),
        with_prop(BASE, "name", {"type": "string", "maxLength": 40}),
        {B: {"MAX_LENGTH_TIGHTENED"}, F: set(), FULL: {"MAX_LENGTH_TIGHTENED"}},
    ),
    (
        "maximum loosened",
        with_prop(BASE, "price", {"type": "number", "maximum": 100}),
        with_prop(BASE, "price", {"type": "number"}),
        {B: set(), F: {"MAXIMUM_LOOSENED"}, FULL: {"MAXIMUM_LOOSENED"}},
    ),
    (
        "minimum raised",
        BASE,
        with_prop(BASE, "price", {"type": "number", "minimum": 0}),
        {B: {"MINIMUM_TIGHTENED"}, F: set(), FULL: {"MINIMUM_TIGHTENED"}},
    ),
    (
        "pattern added",
        BASE,
        with_prop(BASE, "name", {"type": "string", "pattern": "^[A-Z]"}),
        {B: {"CONSTRAINT_ADDED"}, F: set(), FULL: {"CONSTRAINT_ADDED"}},
    ),
    (
        "additionalProperties closed",
        BASE,
        {**BASE, "additionalProperties": False},
        {B: {"ADDITIONAL_PROPERTIES_CLOSED"}, F: set(), FULL: {"ADDITIONAL_PROPERTIES_CLOSED"}},
    ),
    (
        "additionalProperties opened",
        {**BASE, "additionalProperties": False},
        BASE,
        {B: set(), F: {"ADDITIONAL_PROPERTIES_OPENED"}, FULL: {"ADDITIONAL_PROPERTIES_OPENED"}},
    ),
    (
        "field removed from closed content",
        {**BASE, "additionalProperties": False},
        {**without_prop(BASE, "name"), "additionalProperties": False},
        {B: {"FIELD_REMOVED"}, F: set(), FULL: {"FIELD_REMOVED"}},
    ),
    (
        "field added to closed content",
        {**BASE, "additionalProperties": False},
        {**with_prop(BASE, "note", STR), "additionalProperties": False},
        {B: set(), F: {"FIELD_ADDED_TO_CLOSED_CONTENT"}, FULL: {"FIELD_ADDED_TO_CLOSED_CONTENT"}},
    ),
    (
        "nested array item type changed",
        with_prop(BASE, "items", {"type": "array", "items": obj({"qty": {"type": "number"}})}),
        with_prop(BASE, "items", {"type": "array", "items": obj({"qty": {"type": "string"}})}),
        {B: {"TYPE_CHANGED"}, F: {"TYPE_CHANGED"}, FULL: {"TYPE_CHANGED"}},
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), EVOLUTIONS, ids=[e[0] for e in EVOLUTIONS])
def test_evolution_in_each_mode(
    name: str, old: Any, new: Any, expected: dict[Compatibility, set[str]]
) -> None:
    for mode, expected_kinds in expected.items():
        assert kinds(old, new, mode) == expected_kinds, f"{name} under {mode}"
        assert kinds(old, new, NONE) == set()


def test_every_mode_has_a_compatible_and_an_incompatible_evolution() -> None:
    for mode in (B, F, FULL):
        outcomes = {bool(expected[mode]) for _, _, _, expected in EVOLUTIONS}
        assert outcomes == {True, False}


def test_issues_name_the_json_path_and_read_as_sentences() -> None:
    old = obj({"order": obj({"@type": STR, "item": {"type": "array", "items": obj({"qty": STR})}})})
    new = obj({"order": obj({"@type": {"type": "integer"}, "item": {"type": "array", "items": obj({})}})})
    new["properties"]["order"]["properties"]["item"]["items"]["additionalProperties"] = False
    lines = [str(issue) for issue in compare(old, new, B)]
    assert "$.order['@type']: type changed from string to integer" in lines
    assert any(line.startswith("$.order.item[*].qty: field 'qty' removed") for line in lines)


def test_transitive_modes_check_every_earlier_version() -> None:
    v1 = BASE
    v2 = {**without_prop(BASE, "price"), "additionalProperties": {"type": "string"}}  # price gone
    v3 = {**with_prop(v2, "price", {"type": "string"}), "additionalProperties": True}
    history = [(1, v1), (2, v2)]
    # v3 against the latest only: compatible; against v1 too: price went from number to string.
    assert check(v3, history, Compatibility.BACKWARD) == []
    transitive = check(v3, history, Compatibility.BACKWARD_TRANSITIVE)
    assert [(issue.version, issue.kind, issue.path) for issue in transitive] == [
        (1, "TYPE_CHANGED", "$.price")
    ]

    assert check(v3, history, Compatibility.FORWARD) != []  # v2 readers want strings beyond declared fields
    assert {issue.version for issue in check(v3, history, Compatibility.FULL_TRANSITIVE)} == {1, 2}
    assert check(v3, history, Compatibility.FORWARD_TRANSITIVE) != []
    assert check(v3, history, Compatibility.NONE) == []


def test_forward_transitive_catches_what_forward_misses() -> None:
    v1 = with_prop(BASE, "state", {"type": "string", "enum": ["acknowledged"]})
    v2 = BASE  # enum widened: not forward compatible with v1, but registered under NONE
    v3 = with_prop(BASE, "note", STR)
    assert check(v3, [(1, v1), (2, v2)], Compatibility.FORWARD) == []
    issues = check(v3, [(1, v1), (2, v2)], Compatibility.FORWARD_TRANSITIVE)
    assert [(issue.version, issue.kind) for issue in issues] == [(1, "ENUM_VALUE_ADDED")]


PRODUCT = obj({"id": STR, "@type": STR, "name": STR}, required=("id",))


def subtype(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": "#/definitions/Product"},
            obj({"@type": {"const": name}, **extra}, required=("@type",)),
        ]
    }


def polymorphic(*subtypes: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"product": {"oneOf": [{"$ref": f"#/definitions/{s}"} for s in subtypes]}},
        "definitions": {
            "Product": PRODUCT,
            "Mobile": subtype("Mobile", {"msisdn": STR}),
            "Fibre": subtype("Fibre", {"bandwidth": {"type": "integer"}}),
            "Tv": subtype("Tv", {"channels": {"type": "array", "items": STR}}),
        },
    }


def test_subtype_adding_fields_under_allof_is_compatible_with_its_base() -> None:
    definitions = polymorphic("Mobile")["definitions"]

    def product(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"product": schema}, "definitions": definitions}

    base = product({"$ref": "#/definitions/Product"})
    base_or_mobile = product({"anyOf": [{"$ref": "#/definitions/Product"}, {"$ref": "#/definitions/Mobile"}]})
    mobile_only = product({"$ref": "#/definitions/Mobile"})
    assert kinds(base, base_or_mobile, FULL) == set()  # open content: base readers ignore msisdn
    assert kinds(base, mobile_only, F) == set()  # a producer may send the subtype where the base was
    # ...but a reader of Mobile only cannot read any Product: @type pinned, @type required
    assert kinds(base, mobile_only, B) == {"NARROWED_TO_ENUM", "REQUIRED_FIELD_ADDED"}


def test_subtype_alternative_added_and_removed() -> None:
    two, three = polymorphic("Mobile", "Fibre"), polymorphic("Mobile", "Fibre", "Tv")
    assert kinds(two, three, B) == set()  # new readers know every old subtype
    assert kinds(two, three, F) == {"ALTERNATIVE_ADDED"}  # old readers do not know Tv
    assert kinds(three, two, B) == {"ALTERNATIVE_REMOVED"}
    issue = compare(two, three, F)[0]
    assert issue.path == "$.product" and "'Tv'" in issue.message


def test_anyof_branches_are_compared() -> None:
    old = obj({"value": {"anyOf": [STR, {"type": "number"}]}})
    narrower = obj({"value": {"anyOf": [STR]}})
    assert kinds(old, narrower, B) == {"ALTERNATIVE_REMOVED"}
    assert kinds(old, narrower, F) == set()


def recursive_item(id_type: str) -> dict[str, Any]:
    children = {"type": "array", "items": {"$ref": "#/definitions/Item"}}
    item = obj({"id": {"type": id_type}, "item": children})
    return {"$ref": "#/definitions/Item", "definitions": {"Item": item}}


def test_recursive_definitions_terminate() -> None:
    tree, changed = recursive_item("string"), recursive_item("integer")
    assert compare(tree, tree, FULL) == []
    assert kinds(tree, changed, B) == {"TYPE_CHANGED"}


def test_unprovable_keywords_are_reported_not_ignored() -> None:
    assert kinds(BASE, {**BASE, "not": {"required": ["name"]}}, B) == {"UNPROVABLE_CHANGE"}


def test_mode_properties() -> None:
    assert Compatibility.FULL_TRANSITIVE.backward and Compatibility.FULL_TRANSITIVE.forward
    assert Compatibility.FULL_TRANSITIVE.transitive and not Compatibility.FULL.transitive
    assert not Compatibility.NONE.backward and not Compatibility.NONE.forward
