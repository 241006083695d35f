"""No secret in logs: a logging filter that masks bearer tokens, API keys and URL passwords.

Installed on the HANDLERS (:func:`install_redaction`): a filter on a logger
only sees records logged to that very logger, not those of its children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), rf"\g<keep>{MASK}"),
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"(?i)(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]+=*"), rf"\g<keep>{MASK}"),
    # X-API-Key: value, api_key=value, "apiKey": "value", password=value, secret: value, token=value
    (
        re.compile(
            r"(?i)(?P<keep>\b(?:x-api-key|api[_-]?key|password|passwd|[a-z_]*secret|[a-z_]*token)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
        ),
        rf"\g<keep>{MASK}",
    ),
    # Anything shaped like a JWT (header.payload.signature, base64url JSON objects).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), MASK),
    # Strowger API keys, wherever they appear.
    (re.compile(r"\bstw_[A-Za-z0-9_\-]{16,}"), f"stw_{MASK}"),
)


def redact(text: str) -> str:
    """``text`` with every credential it contains replaced by ``***``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks credentials in the message, its arguments, string ``extra`` fields and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for name, value in list(record.__dict__.items()):
            if isinstance(value, str) and name not in ("msg", "name", "levelname", "pathname", "filename"):
                setattr(record, name, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # The traceback is kept only as redacted text: formatters that re-render exc_info
            # (strowger.logs.JsonFormatter) would print the secrets again, so they get the
            # text as the ``exception`` field instead.
            record.exc_text = redact(record.exc_text)
            record.exc_info = None
            record.exception = record.exc_text
        return True


def install_redaction(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Add the filter to ``handlers`` (default: the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
