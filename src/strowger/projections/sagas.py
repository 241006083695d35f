"""The saga overview: where in-flight sagas are, how they end, how long they take, why they compensate.

Fed from the saga log (``saga_log``: one line per status change of a saga or
of one of its steps, written in the engine's transaction) through
:class:`SagaLogSource`, a gap-safe reading of that log:

* SQLite has one writer at a time, so the log's AUTOINCREMENT ids commit in
  order: the position is the id.
* On PostgreSQL ``saga_log.id`` is a BIGSERIAL: two engine transactions can
  take ids 10 and 11 and commit 11 first, so a reader that moved past 11
  would skip 10 for ever. Each line therefore carries the id of the
  transaction that wrote it (``tx_id xid8 DEFAULT pg_current_xact_id()``,
  added by :data:`SAGA_LOG_ORDER`), and the source only returns lines whose
  transaction is older than the oldest transaction still running
  (``tx_id < pg_snapshot_xmin(pg_current_snapshot())``): no line can appear
  later below those. Lines are ordered by (transaction, id) and the position
  packs both: ``tx_id * 2**16 + rank of the line in its transaction``.
  The price: a transaction left open (idle in transaction) holds the overview
  back until it ends, as it holds back VACUUM. The saga engine's own
  transactions are short.

The projection is deterministic in the log, so rebuild works as for any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from strowger.projections.engine import EventSource, Projection, Tables, ViewTable
from strowger.saga.model import AWAITING_ACTION, AWAITING_COMPENSATION, SagaStatus, StepStatus
from strowger.store.db import Database, Row, TableSet, Transaction
from strowger.store.eventstore import StoredEvent

TRANSITION = "SagaTransition"
RANK_BITS = 16  # lines per transaction a position can tell apart (the engine writes a handful)

# Makes saga_log readable in commit order on PostgreSQL (see the module docstring). Idempotent;
# lines written before the column existed all get the id of the ALTER's transaction.
SAGA_LOG_ORDER = TableSet(
    "saga_log_order",
    sqlite=[],
    postgresql=[
        "ALTER TABLE saga_log ADD COLUMN IF NOT EXISTS tx_id xid8 NOT NULL DEFAULT pg_current_xact_id()",
        "CREATE INDEX IF NOT EXISTS saga_log_tx ON saga_log (tx_id, id)",
    ],
)

_COLUMNS = (
    "l.id, l.saga_id, COALESCE(s.saga_type, ''), l.at, l.step, l.before_status, l.after_status, l.reason"
)
_FROM = " FROM saga_log l LEFT JOIN sagas s ON s.saga_id = l.saga_id "
_SQLITE_READ = f"SELECT {_COLUMNS}, l.id{_FROM}WHERE l.id > ? ORDER BY l.id LIMIT ?"
_POSTGRES_READ = (
    f"SELECT {_COLUMNS}, l.tx_id::text::bigint{_FROM}"
    "WHERE l.tx_id >= ?::text::xid8 AND l.tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
    "ORDER BY l.tx_id, l.id LIMIT ?"
)
_POSTGRES_HEAD = (
    "SELECT tx_id::text::bigint, count(*) FROM saga_log "
    "WHERE tx_id = (SELECT max(tx_id) FROM saga_log "
    "WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())) GROUP BY tx_id"
)


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _transition(row: Row, position: int) -> StoredEvent:
    log_id, saga_id, saga_type, at, step, before, after, reason = row[:8]
    return StoredEvent(
        stream_id=str(saga_id),
        version=int(log_id),
        position=position,
        event_id=f"saga-log-{log_id}",
        event_type=TRANSITION,
        schema_version=1,
        recorded_at=_time(at),
        correlation_id=None,
        causation_id=None,
        payload={
            "sagaType": saga_type,
            "step": step,
            "before": before,
            "after": after,
            "reason": reason,
        },
    )


class SagaLogSource(EventSource):
    """The saga log as an ordered, gap-safe source of ``SagaTransition`` events."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def read(self, after: int, limit: int) -> list[StoredEvent]:
        if self.database.kind == "sqlite":
            rows = await self.database.fetchall(_SQLITE_READ, (after, limit))
            return [_transition(row, int(row[8])) for row in rows]
        after_tx, seen = after >> RANK_BITS, after & ((1 << RANK_BITS) - 1)
        # The boundary transaction is read from its first line again, to rank its lines.
        rows = await self.database.fetchall(_POSTGRES_READ, (str(after_tx), limit + seen))
        events: list[StoredEvent] = []
        current, rank = -1, 0
        for row in rows:
            tx_id = int(row[8])
            current, rank = (tx_id, 1) if tx_id != current else (current, rank + 1)
            if rank >= 1 << RANK_BITS:
                raise OverflowError(f"transaction {tx_id} wrote more than {2**RANK_BITS - 1} saga log lines")
            position = (tx_id << RANK_BITS) | rank
            if position > after:
                events.append(_transition(row, position))
        return events

    async def head(self) -> int:
        if self.database.kind == "sqlite":
            row = await self.database.fetchone("SELECT max(id) FROM saga_log")
            return int(row[0]) if row and row[0] is not None else 0
        row = await self.database.fetchone(_POSTGRES_HEAD)
        return 0 if row is None else (int(row[0]) << RANK_BITS) | int(row[1])


# --- the projection ------------------------------------------------------------------------------

_TERMINAL = frozenset(status.value for status in SagaStatus if status.terminal)
_BUSY_STEP = frozenset(status.value for status in AWAITING_ACTION | AWAITING_COMPENSATION)
_UNDONE = frozenset(
    {StepStatus.COMPENSATED.value, StepStatus.COMPENSATION_STUCK.value, StepStatus.COMPENSATION_SKIPPED.value}
)
_MILLISECOND = timedelta(milliseconds=1)


def _body(integer: str) -> str:
    return f"""saga_id TEXT PRIMARY KEY, saga_type TEXT NOT NULL, status TEXT NOT NULL,
        step TEXT NOT NULL, step_status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
        duration_ms {integer}, updated_at TEXT NOT NULL"""


def _compensation_body(integer: str) -> str:
    return f"""position {integer} PRIMARY KEY, saga_id TEXT NOT NULL, saga_type TEXT NOT NULL,
        step TEXT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL, reason TEXT NOT NULL"""


class SagaOverviewProjection(Projection):
    """One row per saga (status, current step, duration) and the log of compensations with reasons."""

    name = "saga_overview"
    version = 1
    tables = (
        ViewTable(
            "saga_overview",
            sqlite=_body("INTEGER"),
            postgresql=_body("BIGINT"),
            indexes=(("status", "status, saga_type, step"), ("finished", "saga_type, finished_at")),
        ),
        ViewTable(
            "saga_compensation", sqlite=_compensation_body("INTEGER"), postgresql=_compensation_body("BIGINT")
        ),
    )
    event_types = frozenset({TRANSITION})

    async def apply(self, tx: Transaction, event: StoredEvent, tables: Tables) -> None:
        line = event.payload
        at = event.recorded_at.isoformat(timespec="microseconds")
        row = await tx.fetchone(
            tables.sql("SELECT status, started_at, step FROM {saga_overview} WHERE saga_id = ?"),
            (event.stream_id,),
        )
        if row is None:
            status = line["after"] if not line["step"] else SagaStatus.RUNNING.value
            await tx.execute(
                tables.sql(
                    "INSERT INTO {saga_overview} (saga_id, saga_type, status, step, step_status, started_at, "
                    "updated_at) VALUES (?, ?, ?, '', '', ?, ?)"
                ),
                (event.stream_id, line["sagaType"], status, at, at),
            )
            started_at, current_step = at, ""
        else:
            started_at, current_step = str(row[1]), str(row[2])
        if line["step"]:
            await self._step_moved(tx, tables, event, at)
            current_step = line["step"]
        else:
            await self._saga_moved(tx, tables, event, at, started_at)
        if line["after"] in _UNDONE or (not line["step"] and line["after"] == SagaStatus.COMPENSATING):
            await tx.execute(
                tables.sql(
                    "INSERT INTO {saga_compensation} (position, saga_id, saga_type, step, status, at, "
                    "reason) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    event.position,
                    event.stream_id,
                    line["sagaType"],
                    current_step,
                    line["after"],
                    at,
                    line["reason"],
                ),
            )

    async def _step_moved(self, tx: Transaction, tables: Tables, event: StoredEvent, at: str) -> None:
        await tx.execute(
            tables.sql(
                "UPDATE {saga_overview} SET step = ?, step_status = ?, updated_at = ? WHERE saga_id = ?"
            ),
            (event.payload["step"], event.payload["after"], at, event.stream_id),
        )

    async def _saga_moved(
        self, tx: Transaction, tables: Tables, event: StoredEvent, at: str, started_at: str
    ) -> None:
        status = event.payload["after"]
        finished = status in _TERMINAL
        duration = (event.recorded_at - _time(started_at)) // _MILLISECOND if finished else None
        await tx.execute(
            tables.sql(
                "UPDATE {saga_overview} SET status = ?, finished_at = ?, duration_ms = ?, updated_at = ? "
                "WHERE saga_id = ?"
            ),
            (status, at if finished else None, duration, at, event.stream_id),
        )


# --- queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    """Nearest-rank percentiles of the durations (ms) of the most recent finished sagas of a type."""

    saga_type: str
    count: int
    p50: int
    p95: int
    p99: int


@dataclass(frozen=True)
class Compensation:
    saga_id: str
    saga_type: str
    step: str
    status: str
    at: str
    reason: str


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


class SagaOverviewView:
    """Queries over the ``saga_overview`` and ``saga_compensation`` views."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def in_flight(self) -> dict[tuple[str, str], int]:
        """How many unfinished sagas each (type, current step) holds (step '' : not started yet)."""
        marks = ", ".join("?" * len(_TERMINAL))
        rows = await self.database.fetchall(
            f"SELECT saga_type, step, count(*) FROM saga_overview WHERE status NOT IN ({marks}) "  # noqa: S608
            "GROUP BY saga_type, step",
            tuple(sorted(_TERMINAL)),
        )
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def counts(self) -> dict[tuple[str, str], int]:
        """How many sagas of each type are in each status."""
        rows = await self.database.fetchall(
            "SELECT saga_type, status, count(*) FROM saga_overview GROUP BY saga_type, status"
        )
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def durations(self, *, window: int = 1000) -> list[Durations]:
        """p50/p95/p99 per type over its ``window`` most recently finished sagas."""
        types = await self.database.fetchall(
            "SELECT DISTINCT saga_type FROM saga_overview WHERE duration_ms IS NOT NULL ORDER BY saga_type"
        )
        result = []
        for (saga_type,) in types:
            rows = await self.database.fetchall(
                "SELECT duration_ms FROM saga_overview WHERE saga_type = ? AND duration_ms IS NOT NULL "
                "ORDER BY finished_at DESC LIMIT ?",
                (saga_type, window),
            )
            ordered = sorted(int(r[0]) for r in rows)
            result.append(
                Durations(
                    str(saga_type),
                    len(ordered),
                    percentile(ordered, 0.50),
                    percentile(ordered, 0.95),
                    percentile(ordered, 0.99),
                )
            )
        return result

    async def compensations(self, *, limit: int = 20) -> list[Compensation]:
        """The most recent compensation lines, newest first."""
        rows = await self.database.fetchall(
            "SELECT saga_id, saga_type, step, status, at, reason FROM saga_compensation "
            "ORDER BY position DESC LIMIT ?",
            (limit,),
        )
        return [Compensation(*(str(value) for value in row)) for row in rows]

    async def overview(self, *, window: int = 1000, compensations: int = 20) -> dict[str, Any]:
        """Everything above as one JSON-ready document (what a dashboard polls)."""
        in_flight, counts = await self.in_flight(), await self.counts()
        return {
            "inFlight": [{"sagaType": t, "step": s, "count": n} for (t, s), n in sorted(in_flight.items())],
            "byStatus": [{"sagaType": t, "status": s, "count": n} for (t, s), n in sorted(counts.items())],
            "durations": [
                {"sagaType": d.saga_type, "count": d.count, "p50Ms": d.p50, "p95Ms": d.p95, "p99Ms": d.p99}
                for d in await self.durations(window=window)
            ],
            "recentCompensations": [
                {
                    "sagaId": c.saga_id,
                    "sagaType": c.saga_type,
                    "step": c.step,
                    "status": c.status,
                    "at": c.at,
                    "reason": c.reason,
                }
                for c in await self.compensations(limit=compensations)
            ],
        }
