"""Upcasting: old event versions are upgraded when read, history is never rewritten.

An upcaster turns the payload of ``(event_type, from_version)`` into the payload
of ``from_version + 1``. Reading chains them, so an event stored as v1 is read
as the newest version every upcaster leads to, while its row stays v1 forever
(the audit trail shows what was really recorded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class Upcasters:
    """A registry of ``(event_type, from_version) -> upcaster`` functions."""

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn(payload) -> payload`` upgrades ``event_type`` from ``from_version`` to the next.

        Raises ValueError if that step already has an upcaster: two would make reads ambiguous.
        """

        def decorator(upcaster: Upcaster) -> Upcaster:
            self.add(event_type, from_version, upcaster)
            return upcaster

        return decorator

    def add(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster`` (the non-decorator form of :meth:`register`)."""
        key = (event_type, from_version)
        if key in self._upcasters:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        self._upcasters[key] = upcaster

    def upcast(self, event_type: str, schema_version: int, payload: Payload) -> tuple[int, Payload]:
        """The newest ``(schema_version, payload)`` the registered upcasters lead to."""
        while (upcaster := self._upcasters.get((event_type, schema_version))) is not None:
            payload = upcaster(payload)
            schema_version += 1
        return schema_version, payload

    def __bool__(self) -> bool:
        return bool(self._upcasters)
