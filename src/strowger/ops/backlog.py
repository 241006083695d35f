"""The outbox backlog operations watches: unpublished rows and the oldest one's creation, per component.

In one schema (``strowger run all``) it is this database's ``outbox``. In a split cluster every
component has its own outbox and operations' own holds only its alert events, so operations
reads the directory's ``outbox_backlog`` view instead: per component, a count and a time, never
another component's events (docs/operations.md, "Database layout").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from strowger.store.db import Transaction

_HERE = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL"
_ACROSS = "SELECT component, backlog, oldest_created_at FROM outbox_backlog ORDER BY component"


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """``backlog`` rows of ``component``'s outbox wait for the relay, the oldest since then."""

    component: str
    backlog: int
    oldest_created_at: float | None  # epoch seconds; None when nothing waits

    def age(self, now: float) -> float | None:
        """Seconds the oldest waiting row has waited, or None."""
        return None if self.oldest_created_at is None else max(0.0, now - self.oldest_created_at)

    def to_json(self, now: float) -> dict[str, Any]:
        age = self.age(now)
        return {
            "component": self.component,
            "backlog": self.backlog,
            "oldestAgeSeconds": None if age is None else round(age, 1),
        }


async def outbox_backlogs(tx: Transaction, *, across_components: bool, here: str) -> list[OutboxBacklog]:
    """Every component's backlog (``across_components``: operations in a split cluster), or ``here``'s."""
    if across_components:
        rows = await tx.fetchall(_ACROSS)
    else:
        rows = [(here, *row) for row in await tx.fetchall(_HERE)]
    return [OutboxBacklog(str(c), int(n), None if t is None else float(t)) for c, n, t in rows]


def total(backlogs: Sequence[OutboxBacklog]) -> OutboxBacklog:
    """All of ``backlogs`` as one: the rows waiting and the oldest of them."""
    times = [b.oldest_created_at for b in backlogs if b.oldest_created_at is not None]
    return OutboxBacklog("total", sum(b.backlog for b in backlogs), min(times) if times else None)
