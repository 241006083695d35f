"""JSON limits name the path of the first offending value."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strowger.security.limits import (
    PARSED_BODY,
    InputLimits,
    LimitExceeded,
    _name_first_offender,
    check_json,
    is_json,
    parsed_json,
)

LIMITS = InputLimits(max_body_bytes=1000, max_array_length=3, max_string_length=5, max_json_depth=4)


def test_a_document_within_the_limits_passes() -> None:
    check_json({"a": [1, 2, {"b": "abcde"}], "@type": "x", "c": None}, LIMITS)
    check_json({"d": 1.5, "e": True}, LIMITS)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"items": [1, 2, 3, 4]}, "$.items"),
        ({"items": [{"note": "toolong"}]}, "$.items[0].note"),
        ({"@type": "toolong"}, "$.@type"),
        ({"w k": "toolong"}, '$["w k"]'),
        ({"a": {"b": {"c": {"d": {}}}}}, "$.a.b.c.d"),
        ([[[[[]]]]], "$[0][0][0][0]"),
        ({"k" * 6: 1}, "$ (a member name)"),
        ({"a": 1, "b": 2, "c": 3, "d": 4}, "$"),
        ("toolong", "$"),
    ],
)
def test_the_first_value_over_a_limit_is_named(document: object, path: str) -> None:
    with pytest.raises(LimitExceeded) as raised:
        check_json(document, LIMITS)

    assert raised.value.message.startswith(f"{path}:")
    assert raised.value.status == 400


def test_offenders_are_reported_in_document_order() -> None:
    with pytest.raises(LimitExceeded, match=r"^\$\.first:"):
        check_json({"first": "toolong", "b": "toolong"}, LIMITS)
    with pytest.raises(LimitExceeded, match=r"^\$\[1\]:"):
        check_json(["ok", "toolong", "toolong"], LIMITS)


def test_a_hostile_depth_does_not_exhaust_the_stack() -> None:
    document: object = []
    for _ in range(100_000):
        document = [document]

    with pytest.raises(LimitExceeded, match="nesting deeper"):
        check_json(document, InputLimits(max_json_depth=50))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=7),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=7), inner, max_size=5),
    max_leaves=40,
)


@given(JSON_VALUES)
def test_the_quick_walk_refuses_exactly_what_the_naming_walk_names(document: Any) -> None:
    def named() -> str | None:
        try:
            _name_first_offender(document, LIMITS)
        except LimitExceeded as exc:
            return exc.message
        return None

    try:
        check_json(document, LIMITS)
    except LimitExceeded as exc:
        assert exc.message == named()
    else:
        assert named() is None


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("Application/JSON", True),
        ("text/plain", False),
        ("", False),
    ],
)
def test_json_media_types(content_type: str, expected: bool) -> None:
    assert is_json(content_type) is expected


def test_the_checked_document_is_handed_over_only_for_the_very_same_bytes() -> None:
    body = b'{"productOrderItem": [{"id": "1"}]}'
    scope: dict[str, object] = {PARSED_BODY: (body, {"productOrderItem": [{"id": "1"}]})}
    assert parsed_json(scope, body) == ({"productOrderItem": [{"id": "1"}]},)
    assert parsed_json(scope, body + b" ") is None
    assert parsed_json({}, body) is None


@given(JSON_VALUES, st.sampled_from(["compact", "escaped and indented"]))
def test_the_shortcut_from_the_bytes_refuses_exactly_what_the_naming_walk_names(
    document: Any, layout: str
) -> None:
    """The bounds read off the JSON text never let an offender through (nor refuse a good body)."""
    if layout == "compact":
        encoded = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    else:  # \\uXXXX escapes make strings longer in bytes than in characters
        encoded = json.dumps(document, ensure_ascii=True, indent=1).encode()
    try:
        _name_first_offender(document, LIMITS)
        named = None
    except LimitExceeded as exc:
        named = exc.message
    try:
        check_json(document, LIMITS, encoded=encoded)
    except LimitExceeded as exc:
        assert exc.message == named
    else:
        assert named is None


def test_the_shortcut_holds_at_each_limit_and_not_past_it() -> None:
    at_limits = {"a": [1, 2, {"b": "abcde"}]}  # 3 items, 5 characters, depth 3
    check_json(at_limits, LIMITS, encoded=orjson.dumps(at_limits))
    deep: object = {"d": {}}
    for _ in range(3):
        deep = {"d": deep}  # 5 levels
    with pytest.raises(LimitExceeded, match="nesting deeper"):
        check_json(deep, LIMITS, encoded=orjson.dumps(deep))
