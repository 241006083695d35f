"""Pure parts of the event backbone: partitioning, consumer definitions, DLQ filters, ages."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from strowger.bus.partitioning import murmur2, partition_for
from strowger.bus.runtime import AckPolicy, Consumer, UnitOfWork
from strowger.commands.dlq import parse_age
from strowger.events.envelope import Envelope
from strowger.store.deadletters import DeadLetterFilter, Failure


async def _noop(envelope: Envelope, uow: UnitOfWork) -> None:
    return None


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # the vectors of Kafka's own UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@given(st.text(), st.integers(min_value=1, max_value=512))
def test_a_key_always_lands_on_the_same_valid_partition(key: str, partitions: int) -> None:
    partition = partition_for(key, partitions)
    assert 0 <= partition < partitions
    assert partition == partition_for(key, partitions)


def test_keys_spread_over_partitions() -> None:
    counts = Counter(partition_for(f"order-{n}", 6) for n in range(6000))
    assert set(counts) == set(range(6))
    assert min(counts.values()) > 800  # roughly 1000 each


def test_a_topic_needs_a_partition() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for("k", 0)


def test_a_consumer_filters_on_event_types_only_when_given() -> None:
    everything = Consumer("c", ("t",), _noop)
    some = Consumer("c", ("t",), _noop, event_types=frozenset({"ProductOrderCreateEvent"}))
    assert everything.wants("Anything")
    assert some.wants("ProductOrderCreateEvent") and not some.wants("ProductOrderDeleteEvent")
    assert everything.retry_backoff == (1.0, 5.0, 30.0)
    assert everything.ack_policy is AckPolicy.AFTER_COMMIT


@pytest.mark.parametrize("bad", [{"topics": ()}, {"batch_size": 0}, {"retry_backoff": (1.0, -1.0)}])
def test_a_consumer_definition_is_validated(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"name": "c", "topics": ("t",), "handler": _noop, **bad}
    with pytest.raises(ValueError):
        Consumer(**fields)  # type: ignore[arg-type]


def test_a_dead_letter_filter_combines_its_criteria() -> None:
    sql, params = DeadLetterFilter(consumer="billing", error_type="KeyError", ids=[3, 4]).where()
    assert sql == "status = ? AND consumer = ? AND error_type = ? AND id IN (?, ?)"
    assert params == ["dead", "billing", "KeyError", 3, 4]
    assert DeadLetterFilter(ids=[]).where()[0].endswith("id IN (NULL)")  # matches nothing


def test_a_failure_keeps_type_message_and_traceback() -> None:
    try:
        raise KeyError("tariff")
    except KeyError as error:
        failure = Failure.of(error)
    assert failure.error_type == "KeyError"
    assert failure.message == "'tariff'"
    assert "raise KeyError" in failure.traceback


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1.5d", 129600)]
)
def test_ages_are_parsed_with_units(text: str, seconds: float) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


def test_a_bad_age_is_refused() -> None:
    with pytest.raises(typer.BadParameter):
        parse_age("soon")
