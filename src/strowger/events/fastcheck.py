"""A fast first pass for JSON Schema validation.

``jsonschema`` (pure Python) explains an error well, with its path and message, but walking a
TMF resource schema costs it up to milliseconds per document: profiled, it was more than half
of the platform's CPU per order. ``jsonschema_rs`` (Rust) answers valid / invalid for the same
schema in microseconds. Nearly every document is valid, so callers ask the Rust validator first
and only run ``jsonschema`` when it says no, to build the error they already report.

Both are configured alike: the same draft, and formats not asserted unless the caller names
some, each with the one function both validators then use (``jsonschema`` ignores ``format``
unless given a format checker). If the Rust validator cannot compile a
schema or judge a document, the check answers "unknown" and the caller falls back to
``jsonschema``: never weaker than before, only faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema_rs
from jsonschema.protocols import Validator

QuickCheck = Callable[[Any], bool]
"""True only when the document is certainly valid; False means "ask the full validator"."""


def quick_check(
    schema: Mapping[str, Any],
    python_validator: type[Validator],
    formats: Mapping[str, Callable[[str], bool]] | None = None,
) -> QuickCheck:
    """A Rust validity check matching ``python_validator``'s draft, or one that always defers.

    ``formats``: the only formats asserted, each by the given function (the same one the
    caller gives ``jsonschema``'s format checker, so both passes agree); none by default.
    """
    rust_class = getattr(jsonschema_rs, python_validator.__name__, None)
    if rust_class is None:
        return _defer
    options: dict[str, Any] = {"validate_formats": False}
    if formats:
        # Asserting formats turns on Rust's built-in ones too: every other format is waved through.
        options = {"validate_formats": True, "formats": {**_UNASSERTED, **formats}}
    try:
        compiled = rust_class(dict(schema), **options)
    except Exception:  # a schema the Rust side cannot compile (regex dialect, …): Python judges
        return _defer

    def check(document: Any) -> bool:
        try:
            return bool(compiled.is_valid(document))
        except Exception:  # a value Rust cannot read (not JSON): let jsonschema answer
            return False

    return check


def _defer(document: Any) -> bool:
    return False


def _anything(value: str) -> bool:
    return True


# Every format jsonschema_rs knows, mapped to "valid": only the formats a caller names are asserted.
_UNASSERTED: dict[str, Callable[[str], bool]] = dict.fromkeys(
    (
        "date", "date-time", "duration", "email", "hostname", "idn-email", "idn-hostname", "ipv4",
        "ipv6", "iri", "iri-reference", "json-pointer", "regex", "relative-json-pointer", "time",
        "uri", "uri-reference", "uri-template", "uuid",
    ),
    _anything,
)  # fmt: skip


def certainly_valid_schema(schema: Mapping[str, Any]) -> bool:
    """True when ``schema`` declares its draft (``$schema``) and is valid against that meta-schema.

    Checking the ~120 built-in event schemas with ``jsonschema`` took six seconds of every
    start-up; Rust takes milliseconds. Without ``$schema`` the two libraries would assume
    different drafts, so such a schema (and any the Rust side rejects) is left to ``jsonschema``.
    """
    if "$schema" not in schema:
        return False
    try:
        return bool(jsonschema_rs.meta.is_valid(dict(schema)))
    except Exception:  # an unknown draft or a value Rust cannot read: let jsonschema say why
        return False
