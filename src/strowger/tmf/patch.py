"""PATCH documents: JSON Merge Patch (RFC 7386) and JSON Patch (RFC 6902), as TMF630 requires.

Both functions are pure: they return a new document and never modify their
arguments. A patch that is malformed raises :class:`BadRequest`; a JSON Patch
``test`` that fails raises :class:`Conflict` (the patch does not apply to the
resource as it is now).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from strowger.tmf.errors import BadRequest, Conflict, UnsupportedMediaType

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
JSON = "application/json"
PATCH_MEDIA_TYPES = (MERGE_PATCH, JSON, JSON_PATCH)


def apply_patch(document: Mapping[str, Any], patch: Any, media_type: str) -> dict[str, Any]:
    """``document`` after ``patch``; ``application/json`` is read as a merge patch (TMF630)."""
    if media_type in (MERGE_PATCH, JSON):
        if not isinstance(patch, Mapping):
            raise BadRequest("a merge patch must be a JSON object", code="invalidBody")
        merged: dict[str, Any] = merge_patch(document, patch)
        return merged
    if media_type == JSON_PATCH:
        result = json_patch(document, patch)
        if not isinstance(result, dict):
            raise BadRequest("a JSON Patch must leave the resource a JSON object", code="invalidBody")
        return result
    raise UnsupportedMediaType(f"PATCH accepts {', '.join(PATCH_MEDIA_TYPES)}; got {media_type!r}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes a member, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: apply each operation in turn to a copy of ``document``; all or nothing."""
    if not isinstance(operations, list):
        raise BadRequest("a JSON Patch must be an array of operations", code="invalidBody")
    result = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        if not isinstance(operation, Mapping) or not isinstance(operation.get("op"), str):
            raise BadRequest(f"operation {index}: an object with 'op' is required", code="invalidBody")
        result = _apply_operation(result, operation, index)
    return result


def _apply_operation(document: Any, operation: Mapping[str, Any], index: int) -> Any:
    op = operation["op"]
    path = _pointer(operation, "path", index)
    if op == "add":
        return _add(document, path, copy.deepcopy(_value(operation, index)), index)
    if op == "remove":
        return _remove(document, path, index)[0]
    if op == "replace":
        document, _ = _remove(document, path, index)
        return _add(document, path, copy.deepcopy(_value(operation, index)), index)
    if op in ("move", "copy"):
        source = _pointer(operation, "from", index)
        if op == "move" and path[: len(source)] == source and path != source:
            raise BadRequest(f"operation {index}: cannot move a value into itself", code="invalidBody")
        value = copy.deepcopy(_get(document, source, index))
        if op == "move":
            document, _ = _remove(document, source, index)
        return _add(document, path, value, index)
    if op == "test":
        if _get(document, path, index) != _value(operation, index):
            raise Conflict(f"JSON Patch test failed at {operation['path']!r}", code="patchTestFailed")
        return document
    raise BadRequest(f"operation {index}: unknown op {op!r}", code="invalidBody")


def _value(operation: Mapping[str, Any], index: int) -> Any:
    if "value" not in operation:
        raise BadRequest(f"operation {index}: 'value' is required", code="invalidBody")
    return operation["value"]


def _pointer(operation: Mapping[str, Any], member: str, index: int) -> list[str]:
    """RFC 6901 pointer tokens (``~1`` is ``/``, ``~0`` is ``~``)."""
    text = operation.get(member)
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise BadRequest(f"operation {index}: {member!r} must be a JSON Pointer", code="invalidBody")
    if text == "":
        return []
    return [token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/")]


def _index(container: list[Any], token: str, index: int, *, appending: bool = False) -> int:
    if appending and token == "-":
        return len(container)
    limit = len(container) if appending else len(container) - 1
    if not token.isdigit() or (token != "0" and token.startswith("0")) or int(token) > limit:
        raise BadRequest(f"operation {index}: no array index {token!r}", code="invalidBody")
    return int(token)


def _get(document: Any, path: list[str], index: int) -> Any:
    current = document
    for token in path:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, index)]
        else:
            raise BadRequest(f"operation {index}: path /{'/'.join(path)} does not exist", code="invalidBody")
    return current


def _add(document: Any, path: list[str], value: Any, index: int) -> Any:
    if not path:
        return value
    parent = _get(document, path[:-1], index)
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, index, appending=True), value)
    else:
        raise BadRequest(f"operation {index}: cannot add below a scalar", code="invalidBody")
    return document


def _remove(document: Any, path: list[str], index: int) -> tuple[Any, Any]:
    if not path:
        return None, document
    parent = _get(document, path[:-1], index)
    token = path[-1]
    if isinstance(parent, dict) and token in parent:
        return document, parent.pop(token)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, token, index))
    raise BadRequest(f"operation {index}: path /{'/'.join(path)} does not exist", code="invalidBody")


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The top-level attributes that differ between two versions (added, removed or changed)."""
    keys = list(before) + [key for key in after if key not in before]
    return [key for key in keys if before.get(key, _MISSING) != after.get(key, _MISSING)]


_MISSING = object()
