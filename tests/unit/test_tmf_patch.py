"""PATCH documents: RFC 7386 merge patch and RFC 6902 JSON Patch."""

from __future__ import annotations

from typing import Any

import pytest

from strowger.tmf.errors import BadRequest, Conflict, UnsupportedMediaType
from strowger.tmf.patch import JSON_PATCH, MERGE_PATCH, apply_patch, changed_fields, json_patch, merge_patch

OFFER: dict[str, Any] = {
    "id": "1",
    "name": "Fibre",
    "validFor": {"startDateTime": "2024-01-01T00:00:00Z", "endDateTime": "2025-01-01T00:00:00Z"},
    "category": [{"id": "c1"}, {"id": "c2"}],
}


def test_merge_patch_merges_objects_removes_nulls_replaces_arrays() -> None:
    patched = merge_patch(OFFER, {"validFor": {"endDateTime": None}, "category": [{"id": "c3"}], "x": 1})
    assert patched["validFor"] == {"startDateTime": "2024-01-01T00:00:00Z"}
    assert patched["category"] == [{"id": "c3"}]
    assert patched["x"] == 1
    assert OFFER["validFor"]["endDateTime"] == "2025-01-01T00:00:00Z"  # input untouched


def test_json_patch_operations() -> None:
    patched = json_patch(
        OFFER,
        [
            {"op": "test", "path": "/name", "value": "Fibre"},
            {"op": "replace", "path": "/name", "value": "Fibre 2G"},
            {"op": "add", "path": "/category/-", "value": {"id": "c3"}},
            {"op": "remove", "path": "/category/0"},
            {"op": "copy", "from": "/name", "path": "/description"},
            {"op": "move", "from": "/validFor/endDateTime", "path": "/retiredAt"},
            {"op": "add", "path": "/a~1b", "value": True},
        ],
    )
    assert patched["name"] == "Fibre 2G"
    assert patched["category"] == [{"id": "c2"}, {"id": "c3"}]
    assert patched["description"] == "Fibre 2G"
    assert patched["retiredAt"] == "2025-01-01T00:00:00Z"
    assert "endDateTime" not in patched["validFor"]
    assert patched["a/b"] is True
    assert OFFER["name"] == "Fibre" and len(OFFER["category"]) == 2


def test_failed_test_operation_is_a_conflict_and_nothing_applies() -> None:
    with pytest.raises(Conflict):
        json_patch(
            OFFER,
            [{"op": "replace", "path": "/name", "value": "X"}, {"op": "test", "path": "/id", "value": "2"}],
        )
    assert OFFER["name"] == "Fibre"


@pytest.mark.parametrize(
    "operations",
    [
        {"op": "add"},
        [{"op": "add", "path": "name", "value": 1}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "add", "path": "/category/7", "value": 1}],
        [{"op": "replace", "path": "/name"}],
        [{"op": "frobnicate", "path": "/name"}],
        [{"op": "move", "from": "/validFor", "path": "/validFor/x"}],
    ],
)
def test_malformed_json_patches_are_bad_requests(operations: Any) -> None:
    with pytest.raises(BadRequest):
        json_patch(OFFER, operations)


def test_apply_patch_dispatches_on_media_type() -> None:
    assert apply_patch(OFFER, {"name": "A"}, MERGE_PATCH)["name"] == "A"
    assert apply_patch(OFFER, {"name": "B"}, "application/json")["name"] == "B"
    assert apply_patch(OFFER, [{"op": "replace", "path": "/name", "value": "C"}], JSON_PATCH)["name"] == "C"
    with pytest.raises(BadRequest):
        apply_patch(OFFER, [{"op": "remove", "path": ""}], JSON_PATCH)  # leaves no object
    with pytest.raises(BadRequest):
        apply_patch(OFFER, [1, 2], MERGE_PATCH)
    with pytest.raises(UnsupportedMediaType):
        apply_patch(OFFER, {}, "text/plain")


def test_changed_fields_lists_added_removed_and_changed_attributes() -> None:
    after = {**OFFER, "name": "X", "new": 1}
    del after["category"]
    assert changed_fields(OFFER, after) == ["name", "category", "new"]
    assert changed_fields(OFFER, dict(OFFER)) == []
