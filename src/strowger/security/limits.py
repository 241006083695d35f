"""Input limits, enforced before any handler runs: body size, JSON depth, array and string lengths.

A body over the limit is refused with 413 as soon as it is known to be too
big: from ``Content-Length`` before reading anything, otherwise while the
chunks stream in (a chunked upload cannot lie its way past the limit). A JSON
body is then parsed once and walked; the first array, string or nesting over
its limit is refused with 400 naming its path (``$.productOrderItem[3].note``).
The handler receives the very bytes that were checked, and the document parsed from
them (:func:`parsed_json`), so a route does not parse the same body twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strowger.security.settings import SecuritySettings
from strowger.tmf.errors import ApiError, BadRequest, PayloadTooLarge, error_response


@dataclass(frozen=True)
class InputLimits:
    max_body_bytes: int = 1_048_576
    max_array_length: int = 1_000
    max_string_length: int = 65_536
    max_json_depth: int = 32

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> InputLimits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_array_length=settings.max_array_length,
            max_string_length=settings.max_string_length,
            max_json_depth=settings.max_json_depth,
        )


PARSED_BODY = "strowger.parsed_body"  # scope key: (body, document) as checked here


def parsed_json(scope: Scope, body: bytes) -> tuple[Any] | None:
    """``(document,)`` if this middleware already parsed exactly ``body`` for this request, else None."""
    parsed: tuple[bytes, Any] | None = scope.get(PARSED_BODY)
    if parsed is None or parsed[0] != body:
        return None
    return (parsed[1],)


class LimitExceeded(BadRequest):
    code = "inputLimitExceeded"
    reason = "Request input exceeds a limit"


def check_json(document: Any, limits: InputLimits, *, encoded: bytes | None = None) -> None:
    """Raise LimitExceeded naming the first value of ``document`` over a limit.

    ``encoded``: the JSON text ``document`` was parsed from. When its size and punctuation
    alone prove every limit is kept (:func:`_certainly_within`), nothing is walked: that is
    nearly every request. Otherwise the walk is iterative, so a hostile nesting depth cannot
    exhaust the Python stack, and first names nothing (:func:`_within_limits`); only a body
    over a limit is walked again to name the first offender (building each value's path for
    every body cost ~5% of a POST).
    """
    if encoded is not None and _certainly_within(encoded, limits):
        return
    if not _within_limits(document, limits):
        _name_first_offender(document, limits)


def _certainly_within(encoded: bytes, limits: InputLimits) -> bool:
    """Whether the JSON text ``encoded`` cannot hold a value over any limit, from its bytes only.

    Exact bounds, never a guess: a string (value or member name) has at most as many
    characters as the text has bytes; an array or object of n members needs n - 1 commas; a
    nesting n deep needs n opening brackets. Commas and brackets inside strings only make
    the bounds more cautious.
    """
    return (
        len(encoded) <= limits.max_string_length
        and encoded.count(b",") < limits.max_array_length
        and encoded.count(b"[") + encoded.count(b"{") <= limits.max_json_depth
    )


def _within_limits(document: Any, limits: InputLimits) -> bool:
    longest, most, deepest = limits.max_string_length, limits.max_array_length, limits.max_json_depth
    if isinstance(document, str):
        return len(document) <= longest
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > deepest or len(value) > most:
            return False
        if isinstance(value, dict):
            if any(len(key) > longest for key in value):
                return False
            value = value.values()
        for item in value:
            if isinstance(item, str):
                if len(item) > longest:
                    return False
            elif isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return True


def _name_first_offender(document: Any, limits: InputLimits) -> None:
    stack: list[tuple[Any, str, int]] = [(document, "$", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, path, limits)
        elif isinstance(value, dict | list):
            if depth > limits.max_json_depth:
                raise LimitExceeded(f"{path}: nesting deeper than {limits.max_json_depth} levels", field=path)
            stack.extend(_children(value, path, depth, limits))


def _check_string(value: str, path: str, limits: InputLimits) -> None:
    if len(value) > limits.max_string_length:
        raise LimitExceeded(
            f"{path}: string of {len(value)} characters, at most {limits.max_string_length} allowed",
            field=path,
        )


def _children(
    value: dict[str, Any] | list[Any], path: str, depth: int, limits: InputLimits
) -> list[tuple[Any, str, int]]:
    if isinstance(value, list):
        if len(value) > limits.max_array_length:
            raise LimitExceeded(
                f"{path}: array of {len(value)} items, at most {limits.max_array_length} allowed", field=path
            )
        return [(item, f"{path}[{index}]", depth + 1) for index, item in reversed(list(enumerate(value)))]
    if len(value) > limits.max_array_length:
        raise LimitExceeded(
            f"{path}: object of {len(value)} members, at most {limits.max_array_length} allowed", field=path
        )
    children = []
    for key, item in value.items():
        _check_string(key, f"{path} (a member name)", limits)
        children.append((item, _member_path(path, key), depth + 1))
    return children[::-1]  # popped in document order, so the first offender is the one named


def _member_path(path: str, key: str) -> str:
    if key.isidentifier() or key.replace("@", "", 1).isidentifier():
        return f"{path}.{key}"
    return f"{path}[{orjson.dumps(key).decode()}]"


def is_json(content_type: str) -> bool:
    """``application/json`` and every ``application/*+json`` (merge-patch, json-patch...)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class InputLimitMiddleware:
    """ASGI middleware refusing oversized bodies (413) and JSON over the limits or malformed (400)."""

    def __init__(self, app: ASGIApp, limits: InputLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away while sending
            self._check_content(scope, body)
        except ApiError as error:
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("Content-Length must be a number of bytes", code="invalidContentLength")
            if int(declared) > self.limits.max_body_bytes:
                raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body exceeds {self.limits.max_body_bytes} bytes")

    def _check_content(self, scope: Scope, body: bytes) -> None:
        if not body or not is_json(_header(scope, b"content-type") or ""):
            return
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"The body is not valid JSON: {exc}", code="invalidBody") from None
        check_json(document, self.limits, encoded=body)
        scope[PARSED_BODY] = (body, document)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1")).strip()
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over once, then defers to the server's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
