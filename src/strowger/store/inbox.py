"""The inbox: which events each consumer has already applied, so a redelivery is a no-op.

The row is written in the handler's own transaction: the effect and the record
that the effect happened commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from strowger.store.db import TableSet, TextArray, Transaction

INBOX_TABLES = TableSet(
    name="inbox",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS inbox (
            consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at REAL NOT NULL,
            PRIMARY KEY (consumer, event_id))""",
        "CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at)",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS inbox (
            consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (consumer, event_id))""",
        "CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at)",
    ],
)


class Inbox:
    """The (consumer, event id) pairs already applied."""

    async def seen(self, tx: Transaction, consumer: str, event_id: str) -> bool:
        """Whether ``consumer`` has already applied ``event_id``."""
        row = await tx.fetchone(
            "SELECT 1 FROM inbox WHERE consumer = ? AND event_id = ?", (consumer, event_id)
        )
        return row is not None

    async def record(self, tx: Transaction, consumer: str, event_id: str) -> bool:
        """Record ``event_id`` as applied by ``consumer`` in ``tx``; False if it already was."""
        changed = await tx.execute(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (consumer, event_id) DO NOTHING",
            (consumer, event_id, datetime.now(UTC).timestamp()),
        )
        return changed == 1

    async def seen_many(
        self, tx: Transaction, consumer: str, event_ids: Sequence[str], *, postgresql: bool = False
    ) -> set[str]:
        """Which of ``event_ids`` ``consumer`` has already applied (one query).

        On PostgreSQL the ids travel as one array: one statement text whatever the batch's
        size (parsed and planned once, then prepared), not one placeholder per id.
        """
        if not event_ids:
            return set()
        if postgresql:
            rows = await tx.fetchall(
                "SELECT event_id FROM inbox WHERE consumer = ? AND event_id = ANY(?)",
                (consumer, TextArray(event_ids)),
            )
        else:
            marks = ", ".join("?" * len(event_ids))
            rows = await tx.fetchall(
                f"SELECT event_id FROM inbox WHERE consumer = ? AND event_id IN ({marks})",  # noqa: S608 (placeholders only)
                (consumer, *event_ids),
            )
        return {str(event_id) for (event_id,) in rows}

    async def record_many(
        self, tx: Transaction, consumer: str, event_ids: Sequence[str], *, postgresql: bool = False
    ) -> set[str]:
        """Record ``event_ids`` (distinct) in one statement; returns those that were not recorded yet.

        Rows are inserted in sorted order so two members recording overlapping batches on
        PostgreSQL take their row locks in the same order (no deadlock); a row another
        transaction is inserting makes this one wait for its outcome, as :meth:`record` does.
        On PostgreSQL the ids travel as one array (``unnest ... WITH ORDINALITY`` keeps the order).
        """
        if not event_ids:
            return set()
        at = datetime.now(UTC).timestamp()
        ordered = sorted(event_ids)
        if postgresql:
            rows = await tx.fetchall(
                "INSERT INTO inbox (consumer, event_id, processed_at) "
                "SELECT ?, ids.event_id, ? FROM unnest(?::text[]) WITH ORDINALITY AS ids (event_id, n) "
                "ORDER BY ids.n ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
                (consumer, at, TextArray(ordered)),
            )
        else:
            values = ", ".join("(?, ?, ?)" for _ in ordered)
            params = [value for event_id in ordered for value in (consumer, event_id, at)]
            rows = await tx.fetchall(
                f"INSERT INTO inbox (consumer, event_id, processed_at) VALUES {values} "  # noqa: S608 (placeholders only)
                "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
                params,
            )
        return {str(event_id) for (event_id,) in rows}
