"""Credentials never reach the log output."""

from __future__ import annotations

import io
import logging

import pytest

from strowger.logs import JsonFormatter
from strowger.security.redact import RedactingFilter, install_redaction, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
KEY = "stw_Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("connecting to postgresql://strowger:hunter2@db:5432/x", "hunter2", "postgresql://strowger:***@db"),
        ("amqp://guest:guest@127.0.0.1:5672/", "guest@", "amqp://guest:***@127.0.0.1"),
        (f"Authorization: Bearer {JWT}", JWT, "Bearer ***"),
        (f"headers={{'authorization': 'Bearer {JWT}'}}", JWT, "Bearer ***"),
        (f"token {JWT} seen", JWT, "token"),
        (f"X-API-Key: {KEY}", KEY, "X-API-Key: ***"),
        ("x-api-key=somesecretvalue", "somesecretvalue", "x-api-key=***"),
        ('{"password": "p4ss"}', "p4ss", '"password": "***"'),
        (f"GET /dlq?api_key={KEY}", KEY, "api_key=***"),
        (f"key {KEY} printed", KEY, "stw_***"),
        ("refresh_token=r3fr3sh&x=1", "r3fr3sh", "refresh_token=***&x=1"),
        ("client_secret: cl13nt", "cl13nt", "client_secret: ***"),
    ],
)
def test_secrets_are_masked(text: str, secret: str, kept: str) -> None:
    redacted = redact(text)

    assert secret not in redacted
    assert kept in redacted


def test_ordinary_text_is_untouched() -> None:
    text = "order 42 moved to inProgress at https://example.net/tmf-api/x/v4/productOrder/42"

    assert redact(text) == text


def test_the_filter_masks_arguments_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    install_redaction([handler])
    install_redaction([handler])  # idempotent
    logger = logging.getLogger("test.security.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling %s", "postgresql://u:pw1@h/db", extra={"header": f"Bearer {JWT}"})
        try:
            raise RuntimeError(f"refused key {KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)

    output = stream.getvalue()
    assert "pw1" not in output
    assert JWT not in output
    assert KEY not in output
    assert "RuntimeError" in output
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
