"""The event store on SQLite.

SQLite has ONE writer at a time (``BEGIN IMMEDIATE`` takes the database write
lock), so positions (the rowid) are handed out and committed in the same order:
a reader can never see a position appear below one it has already read. The
version check and the insert run under that lock, which makes the check exact.

Times are stored as integer microseconds since the epoch (UTC): exact,
compact and ordered, without sqlite3's deprecated datetime adapters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from strowger.errors import ConcurrencyConflict
from strowger.store.db import TableSet, Transaction
from strowger.store.eventstore import NewEvent, SqlEventStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# SQLite allows 32766 bound parameters per statement; 9 per event leaves ample room.
ROWS_PER_INSERT = 1000

TABLES = TableSet(
    name="eventstore",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS strowger_events (
            position INTEGER PRIMARY KEY,
            stream_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            recorded_at INTEGER NOT NULL,
            correlation_id TEXT,
            causation_id TEXT,
            payload BLOB NOT NULL,
            UNIQUE (stream_id, version)
        )""",
        # Events are facts: the database itself refuses to change or forget one.
        """CREATE TRIGGER IF NOT EXISTS strowger_events_no_update BEFORE UPDATE ON strowger_events
           BEGIN SELECT RAISE(ABORT, 'strowger_events is append-only'); END""",
        """CREATE TRIGGER IF NOT EXISTS strowger_events_no_delete BEFORE DELETE ON strowger_events
           BEGIN SELECT RAISE(ABORT, 'strowger_events is append-only'); END""",
        """CREATE TABLE IF NOT EXISTS strowger_snapshots (
            stream_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            schema_version INTEGER NOT NULL,
            recorded_at INTEGER NOT NULL,
            state BLOB NOT NULL,
            PRIMARY KEY (stream_id, version)
        ) WITHOUT ROWID""",
    ],
    postgresql=[],
)

INSERT_EVENTS = (
    "INSERT INTO strowger_events (stream_id, version, event_id, event_type, schema_version, "
    "recorded_at, correlation_id, causation_id, payload) VALUES "
)
ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"


class SqliteEventStore(SqlEventStore):
    tables = TABLES

    async def _insert(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        recorded_at: datetime,
    ) -> list[int]:
        head = await tx.fetchone("SELECT max(version) FROM strowger_events WHERE stream_id = ?", (stream_id,))
        if ((head and head[0]) or 0) != expected_version:
            raise ConcurrencyConflict(f"stream {stream_id!r} is not at version {expected_version}")
        stamp = self._dump_time(recorded_at)
        positions: list[int] = []
        for start in range(0, len(events), ROWS_PER_INSERT):
            chunk = events[start : start + ROWS_PER_INSERT]
            params: list[Any] = []
            for offset, event in enumerate(chunk, start=expected_version + start + 1):
                params += (
                    stream_id,
                    offset,
                    event.event_id,
                    event.event_type,
                    event.schema_version,
                    stamp,
                    event.correlation_id,
                    event.causation_id,
                    orjson.dumps(event.payload),
                )
            # One statement per chunk: constant text and placeholders only, no value is spliced in.
            sql = INSERT_EVENTS + ", ".join([ROW_PLACEHOLDERS] * len(chunk)) + " RETURNING position"
            try:
                rows = await tx.fetchall(sql, params)
            except sqlite3.IntegrityError as exc:  # another process wrote the file
                raise ConcurrencyConflict(f"stream {stream_id!r}: {exc}") from exc
            # RETURNING order is unspecified; rowids grow in insertion (= version) order.
            positions += sorted(row[0] for row in rows)
        return positions

    def _dump_time(self, moment: datetime) -> int:
        return (moment - EPOCH) // timedelta(microseconds=1)

    def _load_time(self, stored: Any) -> datetime:
        return EPOCH + timedelta(microseconds=int(stored))
