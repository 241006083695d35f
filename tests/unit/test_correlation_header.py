"""The caller's X-Correlation-ID is adopted only when it is a plain token (ops/tracing.py)."""

from __future__ import annotations

import uuid

import pytest

from strowger.ops.tracing import accepted_correlation_id


@pytest.mark.parametrize("sent", ["crm-42", "verify-0f3a", "a", "ORD:2026.11.27_x", "x" * 128])
def test_a_plain_token_is_kept(sent: str) -> None:
    assert accepted_correlation_id(sent) == sent


@pytest.mark.parametrize("sent", ["", "x" * 129, "has space", "-leading-dash", "new\nline", "<script>", "ü"])
def test_anything_else_is_replaced_by_a_new_uuid(sent: str) -> None:
    replaced = accepted_correlation_id(sent)
    assert replaced != sent
    assert uuid.UUID(replaced).version == 4
