"""The operator audit: who did which operator action, on what, when, why, and how it ended.

Dead-letter replays and discards, saga retries, skips, forced completions,
compensations and aborts change production state by hand; each one is
recorded here. :meth:`OperatorAudit.record` writes in the CALLER's
transaction, so the audit row commits if and only if the action does. An
action that fails rolls its transaction back, so :meth:`OperatorAudit.action`
records the failure in a transaction of its own.

Timestamps are ISO-8601 UTC text on SQLite and TIMESTAMPTZ on PostgreSQL.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from strowger.errors import InvalidStateTransition, NotFound
from strowger.store.db import Database, Row, TableSet, Transaction

AUDIT_TABLES = TableSet(
    name="security_audit",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS operator_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, occurred_at TEXT NOT NULL,
            subject TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
            reason TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS operator_audit_target ON operator_audit (target, id)",
        "CREATE INDEX IF NOT EXISTS operator_audit_subject ON operator_audit (subject, id)",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS operator_audit (
            id BIGSERIAL PRIMARY KEY, occurred_at TIMESTAMPTZ NOT NULL,
            subject TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
            reason TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS operator_audit_target ON operator_audit (target, id)",
        "CREATE INDEX IF NOT EXISTS operator_audit_subject ON operator_audit (subject, id)",
    ],
)

_COLUMNS = "id, occurred_at, subject, action, target, reason, outcome, detail"


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # e.g. the action is not allowed in the target's current state


@dataclass(frozen=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    subject: str
    action: str  # e.g. "dlq.replay", "saga.force-complete"
    target: str  # e.g. "deadLetter/42", "saga/0b7e…"
    reason: str
    outcome: Outcome
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "occurredAt": self.occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "subject": self.subject,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "outcome": self.outcome.value,
            "detail": self.detail,
        }


class OperatorAudit:
    """Writes and reads the operator audit trail on the database port."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create_tables(self) -> None:
        await self.database.create_tables(AUDIT_TABLES)

    @staticmethod
    async def record(
        tx: Transaction,
        *,
        subject: str,
        action: str,
        target: str,
        reason: str = "",
        outcome: Outcome = Outcome.SUCCEEDED,
        detail: str = "",
        at: datetime | None = None,
    ) -> None:
        """Add one entry inside ``tx`` (the transaction that performs the action)."""
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        await tx.execute(
            "INSERT INTO operator_audit (occurred_at, subject, action, target, reason, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (moment.isoformat(timespec="microseconds"), subject, action, target, reason, outcome, detail),
        )

    @asynccontextmanager
    async def action(
        self, *, subject: str, action: str, target: str, reason: str = ""
    ) -> AsyncIterator[Transaction]:
        """A transaction for one operator action, audited whichever way it ends.

        On success the entry commits with the action; if the block raises, the
        action rolls back and a ``failed`` entry is written on its own before
        the error propagates.
        """
        try:
            async with self.database.transaction() as tx:
                yield tx
                await self.record(tx, subject=subject, action=action, target=target, reason=reason)
        except Exception as exc:
            outcome = Outcome.REFUSED if _is_refusal(exc) else Outcome.FAILED
            async with self.database.transaction() as tx:
                await self.record(
                    tx,
                    subject=subject,
                    action=action,
                    target=target,
                    reason=reason,
                    outcome=outcome,
                    detail=f"{type(exc).__name__}: {exc}"[:2000],
                )
            raise

    async def list(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> builtins.list[AuditEntry]:
        """Entries matching every given filter, newest first; page with ``before_id``."""
        conditions: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (("subject", subject), ("action", action), ("target", target)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            conditions.append("occurred_at >= ?")
            params.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
        if before_id is not None:
            conditions.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        params.append(max(1, min(limit, 1000)))
        rows = await self.database.fetchall(
            f"SELECT {_COLUMNS} FROM operator_audit {where}ORDER BY id DESC LIMIT ?",  # noqa: S608 - fixed columns
            params,
        )
        return [_entry(row) for row in rows]


def _is_refusal(exc: Exception) -> bool:
    return isinstance(exc, InvalidStateTransition | NotFound)


def _entry(row: Row) -> AuditEntry:
    entry_id, occurred_at, subject, action, target, reason, outcome, detail = row
    return AuditEntry(
        id=int(entry_id),
        occurred_at=_moment(occurred_at),
        subject=str(subject),
        action=str(action),
        target=str(target),
        reason=str(reason),
        outcome=Outcome(outcome),
        detail=str(detail),
    )


def _moment(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)
