"""The event store on PostgreSQL.

Ordering strategy. Concurrent PostgreSQL transactions may commit in another
order than the one a sequence hands out numbers in: with a plain ``bigserial``
a reader could read position 11, move its checkpoint past it, and only then see
position 10 commit — an event skipped for ever. So positions do not come from
a sequence: they come from a one-row counter (``strowger_event_sequence``)
that each append increments. The UPDATE row-locks the counter until the
appending transaction ends, so appends take positions one transaction at a time
and commit in position order; positions are also gapless, because a rollback
undoes the increment. Readers take no lock and never wait.

The price is that appending transactions are serialised from their append to
their commit. Keep them short: append last, just before the outbox insert and
the commit (the repository does). Separate components use separate schemas,
hence separate counters, and do not contend with each other.

The whole append is ONE statement: reserve positions, check that the stream is
at the expected version, insert every event (``unnest`` of arrays keeps the SQL
text constant so psycopg prepares it once). A stream that moved on surfaces as
no row inserted, or as a primary-key violation: both raise ConcurrencyConflict.
A one-event append (the common case) has its own scalar form of the same statement:
dumping six one-element arrays and unnesting them cost more than the insert itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.numeric import Int4, Int8

from strowger.errors import ConcurrencyConflict
from strowger.store.db import ByteaArray, Int4Array, Params, TableSet, TextArray, Transaction
from strowger.store.eventstore import NewEvent, SqlEventStore

TABLES = TableSet(
    name="eventstore",
    sqlite=[],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS strowger_events (
            stream_id text NOT NULL,
            version bigint NOT NULL,
            position bigint NOT NULL,
            event_id text NOT NULL,
            event_type text NOT NULL,
            schema_version integer NOT NULL,
            recorded_at timestamptz NOT NULL,
            correlation_id text,
            causation_id text,
            payload bytea NOT NULL,
            CONSTRAINT strowger_events_stream_version PRIMARY KEY (stream_id, version)
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS strowger_events_position ON strowger_events (position)",
        """CREATE TABLE IF NOT EXISTS strowger_event_sequence (
            id smallint PRIMARY KEY CHECK (id = 1),
            last_position bigint NOT NULL
        )""",
        "INSERT INTO strowger_event_sequence (id, last_position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        # Events are facts: the database itself refuses to change or forget one.
        """CREATE OR REPLACE FUNCTION strowger_events_append_only() RETURNS trigger
           LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'strowger_events is append-only'; END $$""",
        """CREATE OR REPLACE TRIGGER strowger_events_append_only
           BEFORE UPDATE OR DELETE ON strowger_events
           FOR EACH STATEMENT EXECUTE FUNCTION strowger_events_append_only()""",
        """CREATE TABLE IF NOT EXISTS strowger_snapshots (
            stream_id text NOT NULL,
            version bigint NOT NULL,
            schema_version integer NOT NULL,
            recorded_at timestamptz NOT NULL,
            state bytea NOT NULL,
            PRIMARY KEY (stream_id, version)
        )""",
    ],
)

# Both appends start here: reserve N positions, only if the stream is at the expected version
# (parameters: N, expected, stream id, expected).
_RESERVE = """
WITH reserved AS (
    UPDATE strowger_event_sequence SET last_position = last_position + ?::bigint
    WHERE id = 1
      AND (?::bigint = 0 OR EXISTS (
          SELECT 1 FROM strowger_events WHERE stream_id = ? AND version = ?::bigint))
    RETURNING last_position
)"""

_INSERT = """
INSERT INTO strowger_events (stream_id, version, position, event_id, event_type, schema_version,
                             recorded_at, correlation_id, causation_id, payload)"""

APPEND = (
    _RESERVE
    + _INSERT
    + """
SELECT ?, ?::bigint + e.ord, reserved.last_position - ?::bigint + e.ord, e.event_id, e.event_type,
       e.schema_version, ?, e.correlation_id, e.causation_id, e.payload
FROM reserved,
     unnest(?::text[], ?::text[], ?::int[], ?::text[], ?::text[], ?::bytea[])
         WITH ORDINALITY
         AS e(event_id, event_type, schema_version, correlation_id, causation_id, payload, ord)
RETURNING position
"""
)

APPEND_ONE = (
    _RESERVE
    + _INSERT
    + """
SELECT ?, ?::bigint + 1, reserved.last_position, ?, ?, ?::int, ?, ?, ?, ?
FROM reserved
RETURNING position
"""
)


class PostgresEventStore(SqlEventStore):
    tables = TABLES

    async def _insert(
        self,
        tx: Transaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        recorded_at: datetime,
    ) -> list[int]:
        if len(events) == 1:
            (event,) = events
            statement, params = APPEND_ONE, _one_event_params(stream_id, expected_version, event, recorded_at)
        else:
            statement, params = APPEND, _params(stream_id, expected_version, events, recorded_at)
        try:
            rows = await tx.fetchall(statement, params)
        except psycopg.errors.UniqueViolation as exc:
            raise ConcurrencyConflict(f"stream {stream_id!r} is not at version {expected_version}") from exc
        if not rows:  # the predecessor check failed: nothing was reserved nor inserted
            raise ConcurrencyConflict(f"stream {stream_id!r} is not at version {expected_version}")
        return sorted(row[0] for row in rows)

    def _int(self, value: int) -> Int8:
        return Int8(value)

    def _dump_time(self, moment: datetime) -> datetime:
        return moment

    def _load_time(self, stored: Any) -> datetime:
        moment: datetime = stored
        return moment.astimezone(UTC)


# psycopg dumps an int as int2, int4 or int8 by its value and keys its prepared statements
# on those types: fixed Int8/Int4 let one prepared plan serve every append.


def _params(stream_id: str, expected_version: int, events: Sequence[NewEvent], at: datetime) -> Params:
    """APPEND's parameters: the events as one array per column."""
    count, expected = Int8(len(events)), Int8(expected_version)
    return (
        count,
        expected,
        stream_id,
        expected,
        stream_id,
        expected,
        count,
        at,
        TextArray(event.event_id for event in events),
        TextArray(event.event_type for event in events),
        Int4Array(event.schema_version for event in events),
        TextArray(event.correlation_id for event in events),
        TextArray(event.causation_id for event in events),
        ByteaArray(orjson.dumps(event.payload) for event in events),
    )


ONE = Int8(1)


def _one_event_params(stream_id: str, expected_version: int, event: NewEvent, at: datetime) -> Params:
    """APPEND_ONE's parameters."""
    expected = Int8(expected_version)
    return (
        ONE,
        expected,
        stream_id,
        expected,
        stream_id,
        expected,
        event.event_id,
        event.event_type,
        Int4(event.schema_version),
        at,
        event.correlation_id,
        event.causation_id,
        orjson.dumps(event.payload),
    )
