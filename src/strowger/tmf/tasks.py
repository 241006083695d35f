"""TMF task resources that cancel an order (cancelProductOrder, cancelServiceOrder, ...).

Every cancel task names its order the same way (``<order>.id``) and leaves the same
fields to the server, so the request checks live here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strowger.tmf.errors import BadRequest

SERVER_SET_FIELDS = ("id", "href", "state", "effectiveCancellationDate")


def cancelled_order(body: Any, attribute: str) -> Mapping[str, Any]:
    """The order reference a cancel task's ``body`` names under ``attribute``; 400 otherwise."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", code="invalidBody")
    reference = body.get(attribute)
    if not isinstance(reference, Mapping) or not reference.get("id"):
        raise BadRequest(f"{attribute}.id is required", field=f"{attribute}.id", code="missingBodyField")
    for name in SERVER_SET_FIELDS:
        if name in body:
            raise BadRequest(f"{name} is set by the server", field=name, code="readOnlyField")
    return reference


def unknown_order(attribute: str, reference: Mapping[str, Any]) -> BadRequest:
    """The 400 for a cancel task naming an order that does not exist."""
    return BadRequest(
        f"{attribute} {reference['id']!r} does not exist", field=f"{attribute}.id", code="invalidBodyField"
    )
