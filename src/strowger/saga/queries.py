"""Read models for operations: what is in flight, what is quarantined, how long sagas take.

All queries run in a transaction the caller gives (a read-only snapshot is enough).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strowger.saga.model import SagaState, SagaStatus, StepStatus
from strowger.saga.store import SagaStore, read_time, write_time
from strowger.store.db import Transaction

_OPEN = (SagaStatus.QUEUED, SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.QUARANTINED)


@dataclass(frozen=True, slots=True)
class StepCount:
    saga_type: str
    saga_status: str
    step: str
    step_status: str
    count: int


@dataclass(frozen=True, slots=True)
class QuarantineReport:
    """Everything an operator needs to decide: the data, what was done and undone, what is stuck."""

    saga_id: str
    saga_type: str
    reason: str
    data: Mapping[str, Any]
    succeeded_steps: tuple[str, ...]
    compensated_steps: tuple[str, ...]
    stuck_step: str
    stuck_errors: tuple[str, ...]
    since: datetime


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Durations in seconds of the sagas of one type that completed."""

    saga_type: str
    count: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class CompensationCount:
    saga_type: str
    reason: str
    count: int


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


class SagaQueries:
    def __init__(self, store: SagaStore | None = None) -> None:
        self.store = store or SagaStore()

    async def in_flight_by_step(self, tx: Transaction) -> list[StepCount]:
        """Open sagas counted by type, status, and the step they are on."""
        rows = await tx.fetchall(
            "SELECT s.saga_type, s.status, st.name, st.status, COUNT(*) FROM sagas s "
            "JOIN saga_steps st ON st.saga_id = s.saga_id AND st.step_index = s.current_step "
            "WHERE s.status IN (?, ?, ?, ?) GROUP BY s.saga_type, s.status, st.name, st.status "
            "ORDER BY s.saga_type, s.status, st.name",
            tuple(status.value for status in _OPEN),
        )
        return [StepCount(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]

    async def quarantined(self, tx: Transaction, limit: int = 100) -> list[QuarantineReport]:
        """Quarantined sagas, oldest first, each with its full context."""
        rows = await tx.fetchall(
            "SELECT saga_id FROM sagas WHERE status = ? ORDER BY updated_at LIMIT ?",
            (SagaStatus.QUARANTINED.value, limit),
        )
        reports = []
        for row in rows:
            state = await self.store.load(tx, str(row[0]))
            if state is not None:
                reports.append(quarantine_report(state))
        return reports

    async def durations(
        self, tx: Transaction, saga_type: str, since: datetime | None = None
    ) -> DurationStats:
        """p50/p95/p99 of the start-to-end duration of completed sagas of ``saga_type``."""
        rows = await tx.fetchall(
            "SELECT started_at, finished_at FROM sagas WHERE saga_type = ? AND status = ? "
            "AND finished_at >= ?",
            (saga_type, SagaStatus.COMPLETED.value, write_time(since) or "0001-01-01T00:00:00+00:00"),
        )
        values = []
        for started, finished in rows:
            start, end = read_time(started), read_time(finished)
            if start is not None and end is not None:
                values.append((end - start).total_seconds())
        values.sort()
        return DurationStats(
            saga_type,
            len(values),
            percentile(values, 0.50),
            percentile(values, 0.95),
            percentile(values, 0.99),
            values[-1] if values else 0.0,
        )

    async def compensation_counts(self, tx: Transaction) -> list[CompensationCount]:
        """How many sagas started compensating, by type and reason (from the transition log)."""
        rows = await tx.fetchall(
            "SELECT s.saga_type, l.reason, COUNT(*) FROM saga_log l JOIN sagas s ON s.saga_id = l.saga_id "
            "WHERE l.step = '' AND l.after_status = ? AND l.before_status = ? "
            "GROUP BY s.saga_type, l.reason ORDER BY COUNT(*) DESC, l.reason",
            (SagaStatus.COMPENSATING.value, SagaStatus.RUNNING.value),
        )
        return [CompensationCount(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def quarantine_report(state: SagaState) -> QuarantineReport:
    done = {StepStatus.SUCCEEDED, StepStatus.UNCERTAIN, StepStatus.COMPENSATED}
    done |= {StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT, StepStatus.COMPENSATION_STUCK}
    stuck = state.current_step
    return QuarantineReport(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        reason=state.reason,
        data=state.data,
        succeeded_steps=tuple(step.name for step in state.steps if step.status in done),
        compensated_steps=tuple(step.name for step in state.steps if step.status is StepStatus.COMPENSATED),
        stuck_step=stuck.name,
        stuck_errors=stuck.errors,
        since=state.updated_at,
    )
