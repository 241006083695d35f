"""Event-sourced aggregates: a pure domain object and the repository that stores it.

The aggregate does no I/O. A command method checks the rules against the
current state and *records* events; state changes only in :meth:`Aggregate.apply`,
so the state is the fold of ``apply`` over the history, whether the events were
just decided or loaded from the store::

    @dataclass(frozen=True)
    class Opened(DomainEvent):
        owner: str

    class Account(Aggregate):
        event_types = (Opened,)

        def __init__(self, aggregate_id: str) -> None:
            super().__init__(aggregate_id)
            self.owner = ""

        @classmethod
        def open(cls, aggregate_id: str, owner: str) -> Account:
            account = cls(aggregate_id)
            account.record(Opened(owner=owner))
            return account

        def apply(self, event: DomainEvent) -> None:
            match event:
                case Opened(owner=owner):
                    self.owner = owner

The :class:`Repository` loads (from the newest usable snapshot, then the
events after it) and saves (appends the pending events with the version they
were decided on, in the caller's transaction, plus a snapshot every
``snapshot_every`` events).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from strowger.errors import NotFound, UnknownEventVersion
from strowger.store.db import Transaction
from strowger.store.eventstore import EventStore, Snapshot, StoredEvent, new_event


@dataclasses.dataclass(frozen=True)
class DomainEvent:
    """Base of an aggregate's events: an immutable fact, named in the past tense.

    Subclasses are frozen dataclasses whose fields are JSON values (str, int,
    float, bool, None, lists and dicts of them). ``event_type`` defaults to the
    class name; raise ``schema_version`` when the fields change and register an
    upcaster from the previous version.
    """

    event_type: ClassVar[str] = "DomainEvent"
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__

    def to_payload(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        return cls(**payload)


_FIELD_NAMES: dict[type[DomainEvent], tuple[str, ...]] = {}


def _field_names(event_type: type[DomainEvent]) -> tuple[str, ...]:
    """The payload's keys, once per class (``dataclasses.fields`` costs more than the event itself)."""
    names = _FIELD_NAMES.get(event_type)
    if names is None:
        names = _FIELD_NAMES[event_type] = tuple(item.name for item in dataclasses.fields(event_type))
    return names


class Aggregate(abc.ABC):
    """A consistency boundary whose state is the fold of :meth:`apply` over its events.

    Subclasses set their initial state in ``__init__(self, aggregate_id)`` and
    list the events they record in ``event_types`` (to decode them on load).
    """

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = ()
    # The stream of aggregate ``x`` is ``f"{stream_type}-{x}"``; defaults to the class name.
    stream_type: ClassVar[str] = ""
    # Snapshot after every N events (None: never); a Repository may override it.
    snapshot_every: ClassVar[int | None] = None
    # Raise when the attributes change shape: older snapshots are then ignored, not misread.
    snapshot_schema: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    @abc.abstractmethod
    def apply(self, event: DomainEvent) -> None:
        """Evolve the state by one event; no rule is checked here: events are facts."""

    def record(self, event: DomainEvent) -> None:
        """Apply a newly decided event and keep it for the next save."""
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    @property
    def pending(self) -> Sequence[DomainEvent]:
        """The events recorded since the aggregate was loaded or last saved."""
        return tuple(self._pending)

    def snapshot_state(self) -> dict[str, Any]:
        """The state to snapshot: every attribute but the identity, version and pending events.

        Override (with :meth:`restore_state`) when an attribute is not a JSON value.
        """
        return {
            name: value for name, value in vars(self).items() if name not in ("id", "version", "_pending")
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`snapshot_state` returned."""
        vars(self).update(state)

    # -- used by the Repository ------------------------------------------------------

    @classmethod
    def stream_of(cls, aggregate_id: str) -> str:
        return f"{cls.stream_type or cls.__name__}-{aggregate_id}"

    @classmethod
    def decode(cls, stored: StoredEvent) -> DomainEvent:
        """The domain event for a stored (already upcast) event."""
        event_class = _event_classes(cls).get(stored.event_type)
        if event_class is None:
            raise UnknownEventVersion(f"{cls.__name__} does not know event type {stored.event_type!r}")
        if stored.schema_version != event_class.schema_version:
            raise UnknownEventVersion(
                f"{stored.event_type} v{stored.schema_version} read, code expects "
                f"v{event_class.schema_version}: register an upcaster"
            )
        return event_class.from_payload(stored.payload)

    def _mark_saved(self) -> None:
        self._pending.clear()


A = TypeVar("A", bound=Aggregate)


def _event_classes(aggregate_type: type[Aggregate]) -> dict[str, type[DomainEvent]]:
    cached: dict[str, type[DomainEvent]] | None = aggregate_type.__dict__.get("_event_classes")
    if cached is None:
        cached = {event_class.event_type: event_class for event_class in aggregate_type.event_types}
        aggregate_type._event_classes = cached  # type: ignore[attr-defined]
    return cached


class Default(enum.Enum):
    """Marks an argument left to the aggregate type's own setting."""

    FROM_AGGREGATE = enum.auto()


class Repository(Generic[A]):
    """Loads and saves one aggregate type through an :class:`EventStore`.

    ``snapshot_every`` overrides the aggregate type's setting (None: no snapshots).
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        *,
        snapshot_every: int | Default | None = Default.FROM_AGGREGATE,
    ) -> None:
        self.store = store
        self.aggregate_type = aggregate_type
        self.snapshot_every = (
            aggregate_type.snapshot_every if isinstance(snapshot_every, Default) else snapshot_every
        )
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1 or None, got {self.snapshot_every}")

    async def load(
        self,
        aggregate_id: str,
        *,
        as_of_version: int | None = None,
        as_of_time: datetime | None = None,
        tx: Transaction | None = None,
    ) -> A:
        """The aggregate now, or as it was after version ``as_of_version`` / at ``as_of_time``.

        Raises NotFound if the stream had no event at that point. Reads in
        ``tx`` if given (to decide and save in one transaction).
        """
        stream_id = self.aggregate_type.stream_of(aggregate_id)
        async with self.store.reading(tx) as reader:
            upper = as_of_version
            if as_of_time is not None:
                at_time = await self.store.version_at(stream_id, as_of_time, tx=reader)
                upper = at_time if upper is None else min(upper, at_time)
            aggregate = self.aggregate_type(aggregate_id)
            if self.snapshot_every is not None:
                snapshot = await self.store.latest_snapshot(
                    stream_id, self.aggregate_type.snapshot_schema, at_most_version=upper, tx=reader
                )
                if snapshot is not None:
                    aggregate.restore_state(snapshot.state)
                    aggregate.version = snapshot.version
            events = await self.store.read_stream(
                stream_id, after_version=aggregate.version, to_version=upper, tx=reader
            )
        for stored in events:
            aggregate.apply(self.aggregate_type.decode(stored))
            aggregate.version = stored.version
        if aggregate.version == 0:
            raise NotFound(f"{self.aggregate_type.__name__} {aggregate_id!r} has no events")
        return aggregate

    async def save(
        self,
        tx: Transaction,
        aggregate: A,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> list[StoredEvent]:
        """Append the pending events in ``tx``; raises ConcurrencyConflict if another save came first.

        The pending events belong to ``tx`` from here on: if it rolls back, load
        the aggregate again rather than saving this instance a second time.
        """
        pending = aggregate.pending
        if not pending:
            return []
        expected = aggregate.version - len(pending)
        stream_id = self.aggregate_type.stream_of(aggregate.id)
        stored = await self.store.append(
            tx,
            stream_id,
            expected,
            [
                new_event(
                    event.event_type, event.to_payload(), event.schema_version, correlation_id, causation_id
                )
                for event in pending
            ],
        )
        if self._snapshot_due(expected, aggregate.version):
            await self.store.save_snapshot(
                tx,
                Snapshot(
                    stream_id=stream_id,
                    version=aggregate.version,
                    schema_version=self.aggregate_type.snapshot_schema,
                    state=aggregate.snapshot_state(),
                    recorded_at=stored[-1].recorded_at,
                ),
            )
        aggregate._mark_saved()
        return stored

    def _snapshot_due(self, before: int, after: int) -> bool:
        """Whether this save crossed a multiple of ``snapshot_every``."""
        every = self.snapshot_every
        return every is not None and before // every != after // every
