"""The notification table: rows written in the handler's transaction, delivered later by the sender.

Network I/O never happens inside a database transaction (on SQLite the one
writer would be held for the length of an SMTP or HTTP call): the consumer
only records ``pending`` rows, and :class:`~strowger.components.notification.sender.NotificationSender`
claims due rows with a short lease, sends outside any transaction, and records
the outcome in a second short transaction: ``sent``, ``pending`` again with a
later ``next_attempt_at`` (transient failure), or ``failed`` (permanent, or out
of attempts). A row's id is derived from (event id, template, channel,
recipient), so a replayed event records nothing new.

A crash between a send and its ``sent`` update sends again once the lease
expires: delivery to a channel is at-least-once, and each message carries
its id for channels that can deduplicate.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass

from strowger.components.notification.channels import OutboundMessage
from strowger.store.db import Database, Row, TableSet, Transaction

_NAMESPACE = uuid.UUID("0b5c7a8e-3f0e-4a52-9d8e-6f5f2f1c4a21")
_COLUMNS = """id TEXT PRIMARY KEY, event_id TEXT NOT NULL, entity_key TEXT NOT NULL, template TEXT NOT NULL,
            channel TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at {real} NOT NULL,
            last_error TEXT NOT NULL DEFAULT '', created_at {real} NOT NULL, sent_at {real}"""

NOTIFICATION_TABLES = TableSet(
    name="notification",
    sqlite=[
        f"CREATE TABLE IF NOT EXISTS notification ({_COLUMNS.format(real='REAL')})",
        "CREATE INDEX IF NOT EXISTS notification_due ON notification (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS notification_entity ON notification (entity_key)",
    ],
    postgresql=[
        f"CREATE TABLE IF NOT EXISTS notification ({_COLUMNS.format(real='DOUBLE PRECISION')})",
        "CREATE INDEX IF NOT EXISTS notification_due ON notification (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS notification_entity ON notification (entity_key)",
    ],
)

_SELECT = (
    "SELECT id, channel, recipient, subject, body, template, event_id, entity_key, status, attempts,"
    " last_error FROM notification"
)


class Status(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class NotificationRow:
    message: OutboundMessage
    status: Status
    attempts: int
    last_error: str


def message_id(event_id: str, template: str, channel: str, recipient: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join((event_id, template, channel, recipient))))


class NotificationStore:
    """Records, claims and settles notification rows."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(self, tx: Transaction, message: OutboundMessage) -> bool:
        """Record ``message`` as pending in ``tx``; False if that message was already recorded."""
        now = time.time()
        inserted = await tx.execute(
            "INSERT INTO notification (id, event_id, entity_key, template, channel, recipient, subject,"
            " body, status, attempts, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (
                message.id,
                message.event_id,
                message.entity_key,
                message.template,
                message.channel,
                message.recipient,
                message.subject,
                message.body,
                now,
                now,
            ),
        )
        return inserted == 1

    async def claim_due(self, limit: int, lease: float) -> list[NotificationRow]:
        """Pending rows due now, each leased for ``lease`` seconds to this sender (none held in a tx)."""
        now = time.time()
        candidates = await self.database.fetchall(
            f"{_SELECT} WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        )
        claimed = []
        async with self.database.transaction() as tx:
            for row in candidates:
                # Compare-and-set: another sender that claimed the row first moved next_attempt_at.
                taken = await tx.execute(
                    "UPDATE notification SET next_attempt_at = ? WHERE id = ? AND status = 'pending'"
                    " AND next_attempt_at <= ?",
                    (now + lease, row[0], now),
                )
                if taken == 1:
                    claimed.append(_row(row))
        return claimed

    async def mark_sent(self, message_id: str) -> None:
        async with self.database.transaction() as tx:
            await tx.execute(
                "UPDATE notification SET status = 'sent', attempts = attempts + 1, sent_at = ?,"
                " last_error = '' WHERE id = ?",
                (time.time(), message_id),
            )

    async def mark_retry(self, message_id: str, error: str, delay: float) -> None:
        async with self.database.transaction() as tx:
            await tx.execute(
                "UPDATE notification SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                (time.time() + delay, error[:500], message_id),
            )

    async def mark_failed(self, message_id: str, error: str) -> None:
        async with self.database.transaction() as tx:
            await tx.execute(
                "UPDATE notification SET status = 'failed', attempts = attempts + 1, last_error = ?"
                " WHERE id = ?",
                (error[:500], message_id),
            )

    async def of_entity(self, entity_key: str) -> list[NotificationRow]:
        """The notifications about one entity (an order id), oldest first."""
        rows = await self.database.fetchall(
            f"{_SELECT} WHERE entity_key = ? ORDER BY created_at, id", (entity_key,)
        )
        return [_row(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """How many notifications are pending, sent and failed."""
        rows = await self.database.fetchall("SELECT status, COUNT(*) FROM notification GROUP BY status")
        return {str(status): int(count) for status, count in rows}


def _row(row: Row) -> NotificationRow:
    message = OutboundMessage(*(str(value) for value in row[:8]))
    return NotificationRow(message, Status(str(row[8])), int(row[9]), str(row[10]))
