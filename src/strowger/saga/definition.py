"""Saga definitions as code: a saga type is an ordered list of steps.

Each step sends a COMMAND to another component (reached only through the bus)
and is settled by that component's reply event; a step that changed something
also names the compensating command that undoes it. Definitions are immutable
values; the :class:`SagaRegistry` maps a saga type to its definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from strowger.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from strowger.saga.model import SagaState


@dataclass(frozen=True, slots=True)
class Command:
    """What a command builder returns; the engine wraps it in a COMMAND envelope.

    ``entity_key`` routes the command (all messages of one order on one
    partition); empty means the saga's own entity key.
    """

    topic: str
    event_type: str
    payload: Mapping[str, Any]
    entity_key: str = ""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a command builder may read: the saga's data and the results of earlier steps.

    ``request_id`` is the same for every attempt of one call (action or
    compensation of one step), so the receiving component can deduplicate a
    retried command; put it in the command payload.
    """

    saga_id: str
    saga_type: str
    step: str
    attempt: int
    request_id: str
    data: Mapping[str, Any]
    results: Mapping[str, Mapping[str, Any]]
    correlation_id: str
    entity_key: str


CommandBuilder = Callable[[StepContext], Command]
OutcomeBuilder = Callable[["SagaState"], Command | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a call is sent before giving up, and how long to wait between sends.

    Timeouts are always retried up to ``max_attempts``. A failure reply (a
    refusal) is a business verdict, so an action is retried after one only when
    ``retry_refusals`` is set; compensations are always retried (they must
    converge).
    """

    max_attempts: int = 3
    backoff: timedelta = timedelta(seconds=1)
    multiplier: float = 2.0
    max_backoff: timedelta = timedelta(minutes=5)
    retry_refusals: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts", "an integer >= 1", self.max_attempts)
        if self.backoff < timedelta(0) or self.max_backoff < timedelta(0):
            raise ConfigError("RetryPolicy.backoff", "a duration >= 0", self.backoff)
        if self.multiplier < 1:
            raise ConfigError("RetryPolicy.multiplier", "a number >= 1", self.multiplier)

    def delay(self, attempts_made: int) -> timedelta:
        """How long to wait before the next send, after ``attempts_made`` sends (exponential, capped)."""
        grown = self.backoff * (self.multiplier ** max(attempts_made - 1, 0))
        return min(grown, self.max_backoff)

    def allows_another(self, attempts_made: int) -> bool:
        return attempts_made < self.max_attempts


@dataclass(frozen=True, slots=True)
class Call:
    """One command of a step and the reply event types that settle it."""

    command: CommandBuilder
    succeeded: str  # reply event type: done
    failed: str  # reply event type: refused or failed
    timeout: timedelta = timedelta(seconds=30)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.timeout <= timedelta(0):
            raise ConfigError("Call.timeout", "a duration > 0", self.timeout)
        if not self.succeeded or not self.failed or self.succeeded == self.failed:
            raise ConfigError("Call.succeeded/failed", "two different reply event types")


@dataclass(frozen=True, slots=True)
class Step:
    """One step: its action and, if it changes anything, the compensation that undoes it."""

    name: str
    action: Call
    compensation: Call | None = None


def no_locks(data: Mapping[str, Any]) -> Sequence[str]:
    return ()


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """A saga type: ordered steps, the semantic locks it needs, and what to announce when it ends.

    ``lock_keys(data)`` names the resources (e.g. ``service:42``) no other saga
    may change while this one runs; all are taken at start, or the saga queues.
    ``on_finished(state)`` may return an event to emit when the saga ends
    (completed, failed, cancelled or aborted), e.g. to tell COM the outcome.
    """

    saga_type: str
    steps: tuple[Step, ...]
    lock_keys: Callable[[Mapping[str, Any]], Sequence[str]] = no_locks
    on_finished: OutcomeBuilder | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError(f"saga {self.saga_type!r}", "at least one step")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ConfigError(f"saga {self.saga_type!r}", "unique step names", names)

    def call(self, index: int, compensation: bool) -> Call:
        """The action or compensation of step ``index`` (ValueError if the step has no compensation)."""
        step = self.steps[index]
        if not compensation:
            return step.action
        if step.compensation is None:
            raise ValueError(f"step {step.name!r} of saga {self.saga_type!r} has no compensation")
        return step.compensation


class SagaRegistry:
    """The saga definitions a process knows, by saga type."""

    def __init__(self, definitions: Iterable[SagaDefinition] = ()) -> None:
        self._definitions: dict[str, SagaDefinition] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: SagaDefinition) -> None:
        """Add ``definition``; ConfigError if its type is already registered."""
        if definition.saga_type in self._definitions:
            raise ConfigError("saga registry", f"one definition per saga type ({definition.saga_type!r})")
        self._definitions[definition.saga_type] = definition

    def get(self, saga_type: str) -> SagaDefinition:
        """The definition of ``saga_type``; NotFound if none is registered."""
        try:
            return self._definitions[saga_type]
        except KeyError:
            raise NotFound(f"no saga definition for type {saga_type!r}") from None

    def __contains__(self, saga_type: object) -> bool:
        return saga_type in self._definitions

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter(self._definitions.values())
