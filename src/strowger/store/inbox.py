"""The inbox: which events each consumer has already applied, so a redelivery is a no-op.

The row is written in the handler's own transaction: the effect and the record
that the effect happened commit together or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from strowger.store.db import TableSet, Transaction

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
