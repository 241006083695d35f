"""The event store's value objects: event ids and the fast constructors of its hot paths."""

from __future__ import annotations

import dataclasses
import os
import uuid
from datetime import UTC, datetime

import pytest

from strowger.store.eventstore import (
    IDS_PER_DRAW,
    NewEvent,
    StoredEvent,
    new_event,
    new_event_id,
    stored_event,
)


def test_event_ids_are_random_version_4_uuids_and_never_repeat() -> None:
    ids = [new_event_id() for _ in range(IDS_PER_DRAW * 5 + 3)]  # across several draws
    assert len(set(ids)) == len(ids)
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == event_id  # canonical lower-case text form


def test_a_forked_child_draws_its_own_ids() -> None:
    new_event_id()  # the parent holds undrawn ids now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id = pipe.read()
    os.waitpid(child, 0)
    assert child_id not in {new_event_id() for _ in range(IDS_PER_DRAW)}


def test_stored_event_builds_the_same_frozen_value_as_the_dataclass() -> None:
    moment = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    fields = ("s-1", 3, 42, "e-1", "Opened", 2, moment, "corr", "cause", {"a": [1, 2]})
    fast, plain = stored_event(*fields), StoredEvent(*fields)
    assert fast == plain and repr(fast) == repr(plain)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.version = 4  # type: ignore[misc]


def test_new_event_gets_a_fresh_id_and_stays_frozen() -> None:
    first = new_event("Opened", {"owner": "ann"}, 1, "corr", None)
    second = new_event("Opened", {"owner": "ann"}, 1, "corr", None)
    assert first.event_id != second.event_id
    assert first == NewEvent("Opened", {"owner": "ann"}, 1, first.event_id, "corr", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.event_type = "Closed"  # type: ignore[misc]
