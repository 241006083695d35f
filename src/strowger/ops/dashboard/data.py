"""What the dashboard shows, read from what the platform actually did.

* The event-flow map is *discovered*, never declared: producer → topic edges
  from the outbox (each row's topic and ``producer`` header) and from the
  trace recorder's hops; topic → consumer edges from the hops and from the
  consumer runners' subscriptions. Rates are counts over a sliding window
  (``rate_window``) computed in SQL, so every replica and every viewer agrees
  and a restart loses nothing.
* Saga health, dead letters and lag come from the same stores the operator
  APIs use (:class:`~strowger.saga.queries.SagaQueries`, the ``parked`` table,
  :meth:`Bus.lag <strowger.bus.port.Bus.lag>`).

Every section is read independently: a failing source (a broker that does not
answer, a table not created yet) becomes an ``error`` in its section instead
of a blank page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from strowger.bus.port import Bus
from strowger.bus.runtime import ConsumerRunner
from strowger.events.envelope import Header, format_time
from strowger.ops import backlog
from strowger.ops.saga_metrics import ORDER_TYPE_KEY, UNSPECIFIED, reason_kind
from strowger.saga.model import SagaStatus
from strowger.saga.queries import SagaQueries, percentile
from strowger.saga.store import read_time, write_time
from strowger.store.db import Database, Row, Transaction
from strowger.store.deadletters import DeadLetterQueue

log = logging.getLogger("strowger.dashboard")

OPEN_SAGA_STATUSES = (SagaStatus.QUEUED, SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.QUARANTINED)
LAG_TIMEOUT = 2.0  # seconds: a broker that does not answer must not freeze the page


class AlertProvider(Protocol):
    """Anything that knows the firing alerts (the platform's AlertMonitor or AlertEngine)."""

    def active_alerts(self) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # node id, e.g. "component:ordering" or "topic:bss.ordering.events"
    target: str
    total: int  # events seen within the discovery horizon
    recent: int | None  # events within the rate window; None when not attributable to this edge

    def to_json(self, window: float) -> dict[str, Any]:
        rate = None if self.recent is None else round(self.recent / window, 3)
        return {"source": self.source, "target": self.target, "total": self.total, "rate": rate}


@dataclass(frozen=True, slots=True)
class FlowMap:
    """Components and topics, and who publishes to / consumes from what, with events/s."""

    window: float
    edges: tuple[Edge, ...]
    consumer_rates: Mapping[str, float] = field(default_factory=dict)

    def nodes(self) -> list[dict[str, str]]:
        ids = dict.fromkeys(node for edge in self.edges for node in (edge.source, edge.target))
        return [_node(node_id, self._role(node_id)) for node_id in ids]

    def _role(self, node_id: str) -> str:
        if node_id.startswith("topic:"):
            return "topic"
        return "consumer" if any(edge.target == node_id for edge in self.edges) else "producer"

    def to_json(self) -> dict[str, Any]:
        return {
            "windowSeconds": self.window,
            "nodes": self.nodes(),
            "edges": [edge.to_json(self.window) for edge in self.edges],
            "consumerRates": dict(self.consumer_rates),
        }


def _node(node_id: str, role: str) -> dict[str, str]:
    return {"id": node_id, "name": node_id.partition(":")[2], "role": role}


def producer_node(name: str) -> str:
    return f"producer:{name or 'unknown'}"


def topic_node(name: str) -> str:
    return f"topic:{name}"


def consumer_node(name: str) -> str:
    return f"consumer:{name}"


class EdgeCounts:
    """Accumulates (source, target) → (total, recent) from several sources without double counting.

    Two sources may see the same publication (the outbox row and its trace hop):
    for one edge the larger count wins rather than the sum.
    """

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], tuple[int, int | None]] = {}

    def see(self, source: str, target: str, total: int, recent: int | None) -> None:
        old_total, old_recent = self._edges.get((source, target), (0, None))
        if old_recent is None:
            merged_recent = recent
        else:
            merged_recent = old_recent if recent is None else max(old_recent, recent)
        self._edges[(source, target)] = (max(old_total, total), merged_recent)

    def edges(self) -> tuple[Edge, ...]:
        return tuple(
            Edge(source, target, total, recent)
            for (source, target), (total, recent) in sorted(self._edges.items())
        )


def _producer_expression(kind: str) -> str:
    """SQL reading the producer header out of an outbox row's JSON headers."""
    if kind == "postgresql":
        return f"(headers::jsonb ->> '{Header.PRODUCER.value}')"
    return f"json_extract(headers, '$.{Header.PRODUCER.value}')"


async def _table_exists(database: Database, table: str) -> bool:
    if database.kind == "postgresql":
        row = await database.fetchone("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(row and row[0])
    row = await database.fetchone("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return row is not None


async def outbox_publications(database: Database, since: float, recent_since: float) -> list[Row]:
    """(producer, topic, total, recent) from outbox rows created since ``since`` (published or not)."""
    producer = _producer_expression(database.kind)
    # Two index-backed halves (published rows by published_at, pending rows) instead of a full scan.
    sql = (
        f"SELECT producer, topic, COUNT(*), SUM(CASE WHEN created_at >= ? THEN 1 ELSE 0 END) FROM ("  # noqa: S608 (constant expression)
        f"SELECT {producer} AS producer, topic, created_at FROM outbox WHERE published_at >= ? "
        f"UNION ALL SELECT {producer} AS producer, topic, created_at FROM outbox WHERE published_at IS NULL"
        ") rows WHERE created_at >= ? GROUP BY producer, topic"
    )
    return await database.fetchall(sql, (recent_since, since, since))


async def traced_hops(database: Database, since: float, recent_since: float) -> list[Row]:
    """(producer, topic, consumer, total, recent) from the trace recorder's hops since ``since``."""
    if not await _table_exists(database, "trace_hop"):
        return []
    return await database.fetchall(
        "SELECT producer, topic, consumer, COUNT(*), "
        "SUM(CASE WHEN COALESCE(handled_at, produced_at) >= ? THEN 1 ELSE 0 END) "
        "FROM trace_hop WHERE produced_at >= ? GROUP BY producer, topic, consumer",
        (recent_since, since),
    )


async def inbox_rates(database: Database, recent_since: float) -> dict[str, int]:
    """Events each consumer applied within the rate window (the inbox records every application)."""
    rows = await database.fetchall(
        "SELECT consumer, COUNT(*) FROM inbox WHERE processed_at >= ? GROUP BY consumer", (recent_since,)
    )
    return {str(consumer): int(count) for consumer, count in rows}


async def discover_flow(
    database: Database,
    runners: Sequence[ConsumerRunner],
    *,
    window: float = 10.0,
    horizon: float = 3600.0,
    now: float | None = None,
) -> FlowMap:
    """The event-flow map of the last ``horizon`` seconds, with rates over the last ``window``."""
    moment = time.time() if now is None else now
    since, recent_since = moment - horizon, moment - window
    counts = EdgeCounts()
    for producer, topic, total, recent in await outbox_publications(database, since, recent_since):
        counts.see(producer_node(str(producer or "")), topic_node(str(topic)), int(total), int(recent or 0))
    for producer, topic, consumer, total, recent in await traced_hops(database, since, recent_since):
        counts.see(producer_node(str(producer or "")), topic_node(str(topic)), int(total), int(recent or 0))
        if consumer:
            counts.see(topic_node(str(topic)), consumer_node(str(consumer)), int(total), int(recent or 0))
    applied = await inbox_rates(database, recent_since)
    for runner in runners:
        topics = runner.consumer.topics
        # A one-topic consumer's inbox rate is its edge's rate; with several topics it cannot be split.
        recent = applied.get(runner.name, 0) if len(topics) == 1 else None
        for topic in topics:
            counts.see(topic_node(topic), consumer_node(runner.name), 0, recent)
    rates = {name: round(count / window, 3) for name, count in applied.items()}
    return FlowMap(window=window, edges=counts.edges(), consumer_rates=rates)


# --- sagas ------------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None


DURATION_WINDOW = timedelta(hours=24)  # the durations shown are of the sagas completed in the last day
COMPENSATION_WINDOW = timedelta(minutes=15)  # as the compensation-rate alert's default window
TOP_REASONS = 5


async def saga_health(
    database: Database,
    *,
    now: datetime | None = None,
    limit: int = 20,
    compensation_window: timedelta = COMPENSATION_WINDOW,
) -> dict[str, Any]:
    """Durations per type and order type, in flight per step, stuck, the compensation rate over a
    rolling window with its top reasons, open sagas, quarantine."""
    if not await _table_exists(database, "sagas"):
        return {"types": [], "durations": [], "inFlight": [], "stuck": 0, "open": [], "quarantined": []}
    moment = now or datetime.now(UTC)
    queries = SagaQueries()
    async with database.snapshot() as tx:
        started = {str(t): int(n) for t, n in await tx.fetchall(_COUNT_BY_TYPE)}
        completed = await _completed_durations(tx, database.kind, moment - DURATION_WINDOW)
        windows = await _compensation_windows(tx, moment - compensation_window)
        in_flight = [
            {"sagaType": c.saga_type, "status": c.saga_status, "step": c.step, "stepStatus": c.step_status,
             "count": c.count}
            for c in await queries.in_flight_by_step(tx)
        ]  # fmt: skip
        stuck = await tx.fetchone(_STUCK, (write_time(moment), *_OPEN_VALUES))
        open_rows = await tx.fetchall(_OPEN_SAGAS, (*_OPEN_VALUES, limit))
        quarantined = [_quarantine_json(report) for report in await queries.quarantined(tx, limit=limit)]
    types = []
    for saga_type in sorted(started):
        durations = sorted(
            seconds for (kind, _), values in completed.items() if kind == saga_type for seconds in values
        )
        window = windows.get(saga_type, CompensationWindowFigures())
        types.append(
            {
                "sagaType": saga_type,
                "started": started[saga_type],
                **_percentiles(durations),
                "compensation": window.to_json(compensation_window),
                "compensationRate": window.rate,
            }
        )
    return {
        "types": types,
        "durations": [
            {"sagaType": saga_type, "orderType": order_type, **_percentiles(sorted(values))}
            for (saga_type, order_type), values in sorted(completed.items())
        ],
        "inFlight": in_flight,
        "stuck": int(stuck[0]) if stuck else 0,
        "open": [_open_saga(row, moment) for row in open_rows],
        "quarantined": quarantined,
    }


@dataclass(frozen=True, slots=True)
class TopReason:
    kind: str  # e.g. "step activate failed"
    count: int
    example: str  # the most frequent full reason of this kind


@dataclass(slots=True)
class CompensationWindowFigures:
    """Sagas of one type that ended within the window, those that ended compensated, and why."""

    finished: int = 0
    compensated: int = 0
    reasons: list[TopReason] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return round(self.compensated / self.finished, 4) if self.finished else 0.0

    def to_json(self, window: timedelta) -> dict[str, Any]:
        return {
            "windowSeconds": int(window.total_seconds()),
            "finished": self.finished,
            "compensated": self.compensated,
            "rate": self.rate,
            "topReasons": [
                {"reason": top.kind, "count": top.count, "example": top.example} for top in self.reasons
            ],
        }


def _percentiles(ordered: Sequence[float]) -> dict[str, Any]:
    return {
        "completed24h": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else 0.0,
    }


def _order_type_expression(kind: str) -> str:
    """SQL reading a saga's order type (its data's ``orderType``) for the per-order-type durations."""
    if kind == "postgresql":
        return f"(data ->> '{ORDER_TYPE_KEY}')"
    return f"json_extract(data, '$.{ORDER_TYPE_KEY}')"


async def _completed_durations(
    tx: Transaction, kind: str, since: datetime
) -> dict[tuple[str, str], list[float]]:
    """Seconds from start to end of each saga completed since ``since``, by (type, order type)."""
    rows = await tx.fetchall(
        f"SELECT saga_type, {_order_type_expression(kind)}, started_at, finished_at FROM sagas "  # noqa: S608 (constant expression)
        "WHERE status = ? AND finished_at >= ?",
        (SagaStatus.COMPLETED.value, write_time(since)),
    )
    found: dict[tuple[str, str], list[float]] = {}
    for saga_type, order_type, started, finished in rows:
        start, end = read_time(started), read_time(finished)
        if start is not None and end is not None:
            key = (str(saga_type), str(order_type or UNSPECIFIED))
            found.setdefault(key, []).append((end - start).total_seconds())
    return found


async def _compensation_windows(tx: Transaction, since: datetime) -> dict[str, CompensationWindowFigures]:
    """Per saga type: sagas ended since ``since``, those that ended compensated, and the top reasons
    they began to compensate (from their transition log)."""
    figures: dict[str, CompensationWindowFigures] = {}
    for saga_type, status, count in await tx.fetchall(_ENDED_SINCE, (write_time(since),)):
        entry = figures.setdefault(str(saga_type), CompensationWindowFigures())
        entry.finished += int(count)
        if status in _COMPENSATED:
            entry.compensated += int(count)
    # Reasons carry ids and details ("step activate failed: port 7 down"): they are counted by kind
    # (the text before the colon, as the metric's label), each shown with its most frequent text.
    kinds: dict[tuple[str, str], list[Any]] = {}
    for saga_type, reason, count in await tx.fetchall(
        _REASONS_SINCE, (write_time(since), *_COMPENSATED, *_REASON_VALUES)
    ):
        tally = kinds.setdefault((str(saga_type), reason_kind(str(reason))), [0, str(reason)])
        tally[0] += int(count)
    ranked = sorted(kinds.items(), key=lambda item: (item[0][0], -item[1][0], item[0][1]))
    for (saga_type, kind), (total, example) in ranked:
        entry = figures.setdefault(saga_type, CompensationWindowFigures())
        if len(entry.reasons) < TOP_REASONS:
            entry.reasons.append(TopReason(kind, int(total), str(example)))
    return figures


_COMPENSATED = (SagaStatus.FAILED.value, SagaStatus.CANCELLED.value)
_ENDED_SINCE = (
    "SELECT saga_type, status, COUNT(*) FROM sagas WHERE finished_at >= ? GROUP BY saga_type, status"
)
_REASON_VALUES = (SagaStatus.COMPENSATING.value, SagaStatus.RUNNING.value)
_REASONS_SINCE = (  # through the sagas that ended in the window: saga_log has no index on time
    "SELECT s.saga_type, l.reason, COUNT(*) FROM sagas s JOIN saga_log l ON l.saga_id = s.saga_id "
    "WHERE s.finished_at >= ? AND s.status IN (?, ?) "
    "AND l.step = '' AND l.after_status = ? AND l.before_status = ? "
    "GROUP BY s.saga_type, l.reason ORDER BY COUNT(*) DESC, l.reason"
)
_OPEN_VALUES = tuple(status.value for status in OPEN_SAGA_STATUSES)
_COUNT_BY_TYPE = "SELECT saga_type, COUNT(*) FROM sagas GROUP BY saga_type"
_STUCK = "SELECT COUNT(*) FROM sagas WHERE stale_at IS NOT NULL AND stale_at <= ? AND status IN (?, ?, ?, ?)"
_OPEN_SAGAS = (
    "SELECT s.saga_id, s.saga_type, s.status, st.name, st.status, s.started_at, s.updated_at, s.entity_key "
    "FROM sagas s JOIN saga_steps st ON st.saga_id = s.saga_id AND st.step_index = s.current_step "
    "WHERE s.status IN (?, ?, ?, ?) ORDER BY s.started_at DESC LIMIT ?"
)


def _open_saga(row: Row, now: datetime) -> dict[str, Any]:
    saga_id, saga_type, status, step, step_status, started, updated, entity_key = row
    started_at = read_time(started)
    return {
        "sagaId": str(saga_id),
        "sagaType": str(saga_type),
        "status": str(status),
        "step": str(step),
        "stepStatus": str(step_status),
        "entityKey": str(entity_key),
        "startedAt": _iso(started_at),
        "updatedAt": _iso(read_time(updated)),
        "ageSeconds": round((now - started_at).total_seconds(), 1) if started_at else None,
    }


def _quarantine_json(report: Any) -> dict[str, Any]:
    return {
        "sagaId": report.saga_id,
        "sagaType": report.saga_type,
        "reason": report.reason,
        "succeededSteps": list(report.succeeded_steps),
        "compensatedSteps": list(report.compensated_steps),
        "stuckStep": report.stuck_step,
        "stuckErrors": list(report.stuck_errors),
        "since": _iso(report.since),
    }


# --- consumers, dead letters, alerts ----------------------------------------------------------


async def consumer_lag(bus: Bus, runners: Iterable[ConsumerRunner]) -> list[dict[str, Any]]:
    """Each runner's lag (total and per topic) and its in-process counters."""
    result = []
    for runner in runners:
        entry: dict[str, Any] = {"consumer": runner.name, "topics": list(runner.consumer.topics)}
        try:
            async with asyncio.timeout(LAG_TIMEOUT):
                samples = await bus.lag(runner.name, runner.consumer.topics)
        except Exception as exc:  # one unreachable group must not hide the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
        else:
            per_topic: dict[str, int] = {}
            for sample in samples:
                per_topic[sample.topic] = per_topic.get(sample.topic, 0) + sample.lag
            entry["lag"] = sum(per_topic.values())
            entry["byTopic"] = per_topic
        stats = runner.stats
        entry["applied"] = stats.applied
        entry["dead"] = stats.dead
        entry["parked"] = stats.parked
        result.append(entry)
    return result


async def dead_letters(database: Database, limit: int = 50) -> dict[str, Any]:
    """Counts per status and the oldest dead letters (the triage list)."""
    queue = DeadLetterQueue(database)
    letters = await queue.find(limit=limit)
    return {"counts": dict(await queue.counts()), "letters": [letter.to_json() for letter in letters]}


async def outbox_backlog(database: Database, *, across_components: bool, here: str) -> dict[str, Any]:
    """Rows waiting for the relay and the oldest one's age, per component (every component's in
    operations of a split cluster, else this database's outbox as ``here``) and in total."""
    async with database.snapshot() as tx:
        found = await backlog.outbox_backlogs(tx, across_components=across_components, here=here)
    moment = time.time()
    return {**backlog.total(found).to_json(moment), "components": [b.to_json(moment) for b in found]}


def active_alerts(provider: AlertProvider | None) -> list[dict[str, Any]]:
    if provider is None:
        return []
    return [alert.to_json() for alert in provider.active_alerts()]


async def section(name: str, read: Callable[[], Awaitable[Any]]) -> Any:
    """``read()``, or ``{"error": ...}`` if it fails (logged), so one bad source leaves the rest."""
    try:
        return await read()
    except Exception as exc:
        log.warning("dashboard section %s failed", name, exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
