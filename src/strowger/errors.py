"""Strowger's exception tree.

Every error a handler, adapter or API raises descends from :class:`StrowgerError`.
The consumer runtime decides what to do with a failure from its class alone:

* :class:`TransientError` — may succeed if tried again (broker or database
  unavailable, optimistic-concurrency conflict, timeout): retried with backoff.
* :class:`PermanentError` — will fail the same way every time (malformed
  message, schema violation, exhausted pool, business rule): dead-lettered at
  once, never retried.

Unknown exceptions (bugs) are treated as transient: they are retried and then
dead-lettered with their traceback, so nothing is lost while the bug is fixed.
"""

from __future__ import annotations


class StrowgerError(Exception):
    """Base class of every error raised by Strowger."""


class ConfigError(StrowgerError):
    """A setting is missing or malformed; the message names the setting and its expected form."""

    def __init__(self, setting: str, expected: str, got: object = None) -> None:
        self.setting = setting
        self.expected = expected
        self.got = got
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"{setting}: expected {expected}{shown}")


class TransientError(StrowgerError):
    """May succeed if retried later: the runtime retries it with backoff."""


class PermanentError(StrowgerError):
    """Will never succeed as it is: the runtime dead-letters it without retrying."""


class ConcurrencyConflict(TransientError):
    """An append found a newer version than the one expected; reload and retry the command."""


class ServiceUnavailable(TransientError):
    """A broker, database or remote API could not be reached."""


class MalformedMessage(PermanentError):
    """A message could not be decoded (not JSON, no eventId, missing headers...)."""


class SchemaViolation(PermanentError):
    """An event does not match the schema registered for its type and version."""


class UnknownEventVersion(PermanentError):
    """No upcaster or schema exists for the event type and version received."""


class NotFound(PermanentError):
    """The entity referred to does not exist."""


class InvalidStateTransition(PermanentError):
    """The requested state change is not allowed from the entity's current state."""


def is_transient(error: BaseException) -> bool:
    """Whether the runtime should retry after ``error`` (unknown errors are retried)."""
    return not isinstance(error, PermanentError)
