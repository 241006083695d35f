"""The operations sampler: refreshes the gauges that need a query and feeds the alert engine.

Every few seconds it reads the outbox backlog, the dead-letter depths, each
consumer group's lag and, where the saga tables exist, saga health; it sets the
Prometheus gauges from them and returns the same observations as
:class:`~strowger.ops.alerts.AlertInputs`, so metrics and alerts never disagree.
In a split cluster (``outbox_across_components``) the backlog is every component's,
the dead letters and sagas come through operations' views (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from strowger.bus.port import Bus
from strowger.bus.runtime import ConsumerRunner
from strowger.ops import backlog
from strowger.ops.alerts import (
    AlertInputs,
    AlertMonitor,
    CompensationWindow,
    DeadLetterDepth,
    LagHistory,
    SagaTypeSample,
    lag_growing,
)
from strowger.ops.metrics import Metrics
from strowger.saga.store import write_time
from strowger.store.db import Database, Transaction

log = logging.getLogger("strowger.ops.sampler")

_OPEN = ("queued", "running", "compensating", "quarantined")
_COMPENSATED = ("failed", "cancelled")


class PlatformSampler:
    """Gathers one snapshot of the platform's health (an ``AlertSource``) and updates the gauges."""

    def __init__(
        self,
        database: Database,
        bus: Bus,
        metrics: Metrics,
        runners: Sequence[ConsumerRunner],
        *,
        lag_window: timedelta = timedelta(minutes=5),
        compensation_window: timedelta = timedelta(minutes=15),
        sagas: bool = False,
        schema_violation_window: timedelta = timedelta(minutes=15),
        outbox_across_components: bool = False,
    ) -> None:
        self.database = database
        self.bus = bus
        self.metrics = metrics
        self.runners = runners
        self.lag_window = lag_window
        self.compensation_window = compensation_window
        self.sagas = sagas
        self.schema_violation_window = schema_violation_window
        self.outbox_across_components = outbox_across_components
        self.lag_history = LagHistory(keep=lag_window * 2)

    async def sample(self) -> AlertInputs:
        now = datetime.now(UTC)
        async with self.database.snapshot() as tx:
            oldest_age = await self._outbox(tx, now)
            dead = await self._dead_letters(tx)
            violations = await self._schema_violations(tx, now)
            sagas, stuck, compensations = await self._sagas(tx, now) if self.sagas else ((), {}, ())
        await self._lag(now)
        return AlertInputs(
            sagas=sagas,
            stuck_sagas=stuck,
            compensations=compensations,
            dead_letters=dead,
            lag=self.lag_history.series(),
            outbox_oldest_age_seconds=oldest_age,
            schema_violations=violations,
        )

    async def _outbox(self, tx: Transaction, now: datetime) -> float | None:
        found = await backlog.outbox_backlogs(tx, across_components=self.outbox_across_components, here="")
        waiting = backlog.total(found)
        age = waiting.age(now.timestamp())
        self.metrics.outbox_backlog.set(waiting.backlog)
        self.metrics.outbox_oldest_age.set(age or 0.0)
        return age

    async def _dead_letters(self, tx: Transaction) -> list[DeadLetterDepth]:
        rows = await tx.fetchall(
            "SELECT consumer, COALESCE(error_type, ''), COUNT(*) FROM parked WHERE status = 'dead' "
            "GROUP BY consumer, error_type"
        )
        depths = [DeadLetterDepth(str(r[0]), str(r[1]), int(r[2])) for r in rows]
        self.metrics.dead_letters.clear()  # a consumer whose dead letters were replayed reads 0, not stale
        for depth in depths:
            self.metrics.dead_letters.labels(depth.consumer, depth.error_type).set(depth.depth)
        return depths

    async def _schema_violations(self, tx: Transaction, now: datetime) -> dict[str, int]:
        """Per consumer, events dead-lettered for a schema violation within the window (the
        validation dead-letter queue, read from the database so every process's count is in it)."""
        since = now.timestamp() - self.schema_violation_window.total_seconds()
        rows = await tx.fetchall(
            "SELECT consumer, COUNT(*) FROM parked WHERE status = 'dead' AND error_type = 'SchemaViolation' "
            "AND last_failed_at >= ? GROUP BY consumer",
            (since,),
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def _lag(self, now: datetime) -> None:
        for runner in self.runners:
            topics = runner.consumer.topics
            try:
                samples = await self.bus.lag(runner.consumer.name, topics)
            except Exception as exc:  # a broker hiccup must not stop the other probes
                log.warning("lag of %s unavailable: %s", runner.consumer.name, exc)
                continue
            per_topic: dict[str, int] = dict.fromkeys(topics, 0)
            for sample in samples:
                self.metrics.consumer_lag.labels(sample.topic, str(sample.partition), sample.group).set(
                    sample.lag
                )
                per_topic[sample.topic] = per_topic.get(sample.topic, 0) + sample.lag
            for topic, lag in per_topic.items():
                self.lag_history.add(runner.consumer.name, topic, lag, now)
        for series in self.lag_history.series():
            growing = lag_growing(series, self.lag_window)
            self.metrics.consumer_lag_growing.labels(series.topic, series.group).set(1 if growing else 0)

    async def _sagas(
        self, tx: Transaction, now: datetime
    ) -> tuple[list[SagaTypeSample], dict[str, int], list[CompensationWindow]]:
        from strowger.saga.queries import SagaQueries

        queries = SagaQueries()
        self.metrics.sagas_in_flight.clear()
        for step in await queries.in_flight_by_step(tx):
            self.metrics.sagas_in_flight.labels(step.saga_type, step.step).inc(step.count)
        stuck_rows = await tx.fetchall(
            "SELECT saga_type, COUNT(*) FROM sagas "
            "WHERE status IN (?, ?, ?, ?) AND stale_at < ? GROUP BY saga_type",
            (*_OPEN, write_time(now)),
        )
        stuck = {str(r[0]): int(r[1]) for r in stuck_rows}
        quarantined = await tx.fetchall(
            "SELECT saga_type, COUNT(*) FROM sagas WHERE status = 'quarantined' GROUP BY saga_type"
        )
        self.metrics.sagas_stuck.clear()
        self.metrics.sagas_quarantined.clear()
        for saga_type, count in stuck.items():
            self.metrics.sagas_stuck.labels(saga_type).set(count)
        for row in quarantined:
            self.metrics.sagas_quarantined.labels(str(row[0])).set(int(row[1]))
        since = write_time(now - self.compensation_window)
        finished = await tx.fetchall(
            "SELECT saga_type, status, COUNT(*) FROM sagas WHERE finished_at >= ? GROUP BY saga_type, status",
            (since,),
        )
        totals: dict[str, list[int]] = {}
        for saga_type, status, count in finished:
            entry = totals.setdefault(str(saga_type), [0, 0])
            entry[0] += int(count)
            if status in _COMPENSATED:
                entry[1] += int(count)
        windows = [CompensationWindow(t, done, compensated) for t, (done, compensated) in totals.items()]
        samples = []
        for saga_type in totals:
            stats = await queries.durations(tx, saga_type, since=now - timedelta(hours=1))
            oldest = await tx.fetchone(
                "SELECT MIN(started_at) FROM sagas WHERE saga_type = ? AND status = 'running'", (saga_type,)
            )
            running_for = (
                (now - datetime.fromisoformat(str(oldest[0]))).total_seconds()
                if oldest and oldest[0]
                else 0.0
            )
            samples.append(SagaTypeSample(saga_type, stats.count, stats.p95, max(running_for, stats.max)))
        return samples, stuck, windows


async def run_monitor(monitor: AlertMonitor, interval: float = 5.0) -> None:
    """Sample, refresh the gauges and evaluate the alert rules every ``interval`` seconds, forever."""
    while True:
        try:
            await monitor.check()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("alert check failed; trying again in %ss", interval)
        await asyncio.sleep(interval)
