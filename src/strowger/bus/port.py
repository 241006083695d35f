"""The bus port: what every backend (embedded, Kafka, RabbitMQ) provides.

The port is deliberately small and at the level of *messages*: publishing a
confirmed batch, and a consumer-group member that fetches deliveries and
acknowledges them. Everything else (decoding, inbox dedup, retry, parking,
dead letters, acknowledgement policy) lives once in :mod:`strowger.bus.runtime`
and therefore behaves the same on every backend.

Guarantees every backend must give (tests/contract/bus_contract.py checks them):

* ``publish`` returns only when the broker has durably accepted every message.
* Messages with the same key on the same topic are delivered in publish order,
  to one member of a group at a time.
* Delivery is at-least-once: a delivery that was not committed before its
  member stopped or crashed is delivered again to the group.
* A group can be rewound to an offset or a timestamp and receives the
  messages from there again.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from strowger.events.envelope import Message
from strowger.events.topics import Topic
from strowger.settings import BusKind


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as received by a group member, with where it sits in the log."""

    message: Message
    partition: int
    offset: int
    timestamp: datetime  # when the broker appended it
    redelivered: bool = False
    token: object = None  # the backend's own handle (delivery tag, ...) for commit


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    """Where to rewind a consumer group to: an offset (per partition) or a time."""

    offset: int | None = None
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if (self.offset is None) == (self.timestamp is None):
            raise ValueError("a replay point is either an offset or a timestamp")


@dataclass(frozen=True, slots=True)
class LagSample:
    """How far one consumer group is behind on one partition of one topic."""

    topic: str
    partition: int
    group: str
    committed: int  # next offset the group will read
    end: int  # next offset the broker will write

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


class Subscriber(abc.ABC):
    """One member of a consumer group, reading some topics."""

    group: str
    topics: tuple[str, ...]

    @abc.abstractmethod
    async def start(self) -> None:
        """Join the group; after this, fetch() returns the group's share of messages for this member."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group; deliveries not committed are delivered again to the group."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds for the first."""

    @abc.abstractmethod
    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge deliveries (and, per partition, everything before them) so the group never sees
        them again. Called only after the handler's transaction has committed."""

    @abc.abstractmethod
    async def rewind(self, to: ReplayPoint) -> None:
        """Move the group's position on every partition back (or forward) to ``to``."""


class Bus(abc.ABC):
    """A message broker as Strowger uses it."""

    kind: BusKind

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the broker; safe to call twice."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush pending publishes and disconnect; safe to call twice."""

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[Topic]) -> None:
        """Create the topics (exchanges, queues, streams) if they do not exist."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish a batch; returns once the broker has confirmed every message.

        Raises ServiceUnavailable (transient) if the broker cannot confirm them.
        """

    @abc.abstractmethod
    def subscriber(self, group: str, topics: Sequence[str]) -> Subscriber:
        """A new member of consumer group ``group`` on ``topics`` (not started)."""

    @abc.abstractmethod
    async def lag(self, group: str, topics: Sequence[str]) -> list[LagSample]:
        """The group's lag on every partition of ``topics``."""
