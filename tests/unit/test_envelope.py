from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from strowger.errors import MalformedMessage
from strowger.events.envelope import (
    Category,
    Envelope,
    Header,
    Message,
    decode,
    encode,
    format_time,
    new_id,
)


def order_event(**fields: object) -> Envelope:
    return Envelope(
        event_type="ProductOrderStateChangeEvent",
        payload={"productOrder": {"id": "PO-1", "state": "completed", "@type": "ProductOrder"}},
        entity_key="PO-1",
        correlation_id="corr-1",
        producer="ordering",
        **fields,  # type: ignore[arg-type]
    )


def test_encode_puts_routing_information_in_headers() -> None:
    message = encode(order_event(causation_id="cause-1", traceparent="00-abc-def-01"), "bss.ordering.events")
    assert message.topic == "bss.ordering.events"
    assert message.key == "PO-1"
    headers = message.headers
    assert headers[Header.EVENT_TYPE] == "ProductOrderStateChangeEvent"
    assert headers[Header.CORRELATION_ID] == "corr-1"
    assert headers[Header.CAUSATION_ID] == "cause-1"
    assert headers[Header.TRACEPARENT] == "00-abc-def-01"
    assert headers[Header.SCHEMA_VERSION] == "1"
    assert headers[Header.PRODUCER] == "ordering"
    assert headers[Header.PRODUCED_AT].endswith("Z")


def test_the_body_is_a_tmf_notification() -> None:
    body = orjson.loads(encode(order_event(), "t").value)
    assert body["eventType"] == "ProductOrderStateChangeEvent"
    assert body["@type"] == "ProductOrderStateChangeEvent"
    assert body["event"]["productOrder"]["state"] == "completed"
    assert body["timeOccurred"] and body["eventTime"] and body["eventId"]


def test_round_trip_keeps_every_field() -> None:
    original = order_event(domain="bss", title="t", priority="Normal", causation_id="c")
    again = decode(encode(original, "t"))
    assert again.event_id == original.event_id
    assert again.event_type == original.event_type
    assert again.payload == original.payload
    assert again.entity_key == "PO-1"
    assert (again.correlation_id, again.causation_id) == ("corr-1", "c")
    assert (again.domain, again.title, again.priority) == ("bss", "t", "Normal")
    assert again.category is Category.DOMAIN


def test_the_specs_misspelt_time_ocurred_is_accepted() -> None:
    body = {
        "eventId": "e1",
        "eventType": "ProductOrderCreateEvent",
        "timeOcurred": "2026-03-15T10:00:00Z",
        "event": {"productOrder": {"id": "PO-9"}},
    }
    envelope = Envelope.from_tmf(body)
    assert envelope.time_occurred is not None and envelope.time_occurred.day == 15
    assert envelope.entity_key == "PO-9"


def test_unknown_tmf_fields_survive_a_round_trip() -> None:
    body = {"eventId": "e1", "eventType": "X", "event": {"x": {"id": "1"}}, "relatedParty": [{"id": "C"}]}
    assert Envelope.from_tmf(body).to_tmf()["relatedParty"] == [{"id": "C"}]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"not json", {"eventId": "e"}, "not JSON"),
        (b"[1, 2]", {"eventId": "e"}, "not a JSON object"),
        (b'{"eventType": "X", "event": {}}', {}, "no eventId"),
        (b'{"eventId": "e", "event": {}}', {}, "eventType"),
        (b'{"eventId": "e", "eventType": "X", "event": []}', {}, "'event' must be an object"),
        (b'{"eventId": "e", "eventType": "X", "event": {}}', {"schemaVersion": "v2"}, "bad header"),
    ],
)
def test_malformed_messages_raise_only_malformed_message(
    value: bytes, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode(Message(topic="t", key="k", headers=headers, value=value))


def test_a_caused_event_inherits_correlation_and_links_its_cause() -> None:
    cause = order_event(traceparent="00-trace-span-01")
    effect = cause.caused("ServiceOrderCreateEvent", {"serviceOrder": {"id": "SO-1"}})
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.event_id
    assert effect.traceparent == cause.traceparent
    assert effect.entity_key == "PO-1"
    assert effect.event_id != cause.event_id


def test_new_ids_are_random_version_4_uuids_written_as_uuid_writes_them() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    # every one of the 122 random bits varies across the sample (none is stuck at 0 or 1)
    ors, ands = 0, (1 << 128) - 1
    for text in ids:
        ors, ands = ors | uuid.UUID(text).int, ands & uuid.UUID(text).int
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant bits
    assert (ors ^ ands) | fixed == (1 << 128) - 1


@given(st.datetimes(timezones=st.timezones()), st.datetimes(timezones=st.just(UTC)))
@example(  # a float timestamp rounded this up to the next second
    datetime(4148, 1, 1, 0, 0, 0, 999999, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
)
def test_times_are_written_as_isoformat_writes_them_in_utc(moment: datetime, other: datetime) -> None:
    for value in (moment, other, moment):  # a cached second must not leak into another one
        expected = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert format_time(value) == expected


def test_evolve_copies_as_dataclasses_replace_does() -> None:
    original = order_event(causation_id="c-1")
    changed = original.evolve(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", producer="som")
    assert changed == replace(original, traceparent=changed.traceparent, producer="som")
    assert original.producer == "ordering" and original.traceparent == ""  # untouched
    assert original.evolve() == original and original.evolve() is not original
    with pytest.raises(TypeError, match="no field 'colour'"):
        original.evolve(colour="blue")
