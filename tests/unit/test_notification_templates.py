"""Choosing and rendering a notification, pure."""

from __future__ import annotations

from typing import Any

from strowger.components.notification.templates import Recipient, recipients, render


def order(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "productOrder": {
            "id": "ORD-1",
            "state": state,
            "relatedParty": [{"id": "CUST-1", "name": "Ada", "role": "Customer"}],
            "productOrderItem": [{"id": "1", "productOffering": {"id": "PO-FIBRE-500", "name": "Fibre 500"}}],
            **extra,
        }
    }


def test_a_completed_order_renders_the_completed_template() -> None:
    rendered = render("ProductOrderStateChangeEvent", order("completed"))
    assert rendered is not None
    assert rendered.template == "order-completed"
    assert rendered.subject == "Your order ORD-1 is complete"
    assert rendered.body == "Hello Ada, your order ORD-1 (Fibre 500) is complete."


def test_a_rejection_carries_the_latest_note_as_the_reason() -> None:
    notes = [{"text": "first"}, {"text": "productOffering 'X' is not in the catalog"}]
    rendered = render("ProductOrderStateChangeEvent", order("rejected", note=notes))
    assert rendered is not None and rendered.template == "order-rejected"
    assert rendered.body.endswith(": productOffering 'X' is not in the catalog")


def test_states_and_events_without_a_template_notify_nobody() -> None:
    assert render("ProductOrderStateChangeEvent", order("inProgress")) is None
    assert render("ProductOrderAttributeValueChangeEvent", order("completed")) is None
    assert render("ProductOrderStateChangeEvent", {"somethingElse": {}}) is None


def test_values_are_one_bounded_line_and_cannot_expand_placeholders() -> None:
    hostile = "line1\r\nBcc: victim@example.com $order_id ${customer}" + "x" * 500
    rendered = render("ProductOrderStateChangeEvent", order("failed", note=[{"text": hostile}]))
    assert rendered is not None
    assert "\n" not in rendered.body and "\r" not in rendered.body
    assert "$order_id ${customer}" in rendered.body  # substituted once, never re-expanded
    assert len(rendered.body) < 300


def test_the_preferred_contact_medium_is_used() -> None:
    payload = order("completed")
    payload["productOrder"]["relatedParty"][0]["contactMedium"] = [
        {"mediumType": "email", "characteristic": {"emailAddress": "ada@example.com"}},
        {"mediumType": "mobile", "preferred": True, "characteristic": {"phoneNumber": "+3312345678"}},
    ]
    assert recipients(payload, "email") == [Recipient("sms", "+3312345678")]


def test_without_a_usable_medium_the_default_channel_gets_the_party_id() -> None:
    payload = order("completed")
    payload["productOrder"]["relatedParty"][0]["contactMedium"] = [{"mediumType": "pigeon"}]
    assert recipients(payload, "push") == [Recipient("push", "CUST-1")]
