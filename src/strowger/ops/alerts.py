"""Alerts: rules over plain observations, each alert fired once and resolved once.

The pure part is :class:`AlertEngine`: given an :class:`AlertInputs` snapshot and
the time, it returns the :class:`AlertTransition` s (fired, resolved) and keeps
each alert's state. An alert is a rule plus labels (``DeadLetters`` for
``consumer=billing``). Its life cycle::

    inactive --condition--> pending --held for `for`--> firing  (AlertFiredEvent)
    firing --cleared (below the hysteresis level) for `resolve_after`--> inactive  (AlertResolvedEvent)

A value between the clear level and the threshold changes nothing, and a
condition that comes back before ``resolve_after`` keeps the alert firing, so a
value hovering around its threshold never flaps.

The I/O shell is :class:`AlertMonitor`: it samples an :class:`AlertSource`,
evaluates, and in ONE transaction saves the state (:class:`AlertStateStore`) and
emits each transition as an ``ops.alerts`` system event through an
:class:`AlertSink` (normally the outbox). A restart reloads the state, so a
firing alert is not fired again.

:func:`prometheus_rules` writes the same rules as a Prometheus alerting-rules
file over the metrics of :mod:`strowger.ops.metrics`, for teams on Alertmanager.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strowger.events.envelope import Category, Envelope, format_time, parse_time
from strowger.events.topics import ALERT_EVENTS
from strowger.settings import load_section
from strowger.store.db import Database, TableSet, Transaction

log = logging.getLogger("strowger.alerts")

ALERT_FIRED = "AlertFiredEvent"
ALERT_RESOLVED = "AlertResolvedEvent"
ALERTS_PRODUCER = "strowger-alerts"


class AlertSettings(BaseSettings):
    """Thresholds of the built-in rules (env ``STROWGER_ALERTS_*``); durations in seconds."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_ALERTS_", extra="forbid", frozen=True)

    # A saga slower than `saga_slow_factor` x the p95 of its type (once the p95 rests on enough sagas).
    saga_slow_factor: float = Field(default=2.0, gt=1)
    saga_slow_min_samples: int = Field(default=20, ge=1)
    saga_slow_for_seconds: float = Field(default=0.0, ge=0)
    saga_recent_window_seconds: float = Field(default=900.0, gt=0)  # Prometheus: "recent" sagas
    saga_baseline_window_seconds: float = Field(default=86400.0, gt=0)  # Prometheus: the p95 baseline
    # Sagas without a transition for longer than their step timeout (the saga engine decides).
    saga_stuck_for_seconds: float = Field(default=0.0, ge=0)
    # Compensated / finished sagas of one type over a rolling window.
    compensation_rate: float = Field(default=0.05, gt=0, lt=1)
    compensation_window_seconds: float = Field(default=900.0, gt=0)
    compensation_min_sagas: int = Field(default=20, ge=1)
    # Dead letters waiting, per consumer and error type: fires above this depth.
    dead_letter_depth: int = Field(default=0, ge=0)
    # Consumer lag: above a level for a while, or growing over a window (a stopped consumer).
    consumer_lag_max: int = Field(default=10_000, ge=0)
    consumer_lag_for_seconds: float = Field(default=120.0, ge=0)
    lag_growth_window_seconds: float = Field(default=600.0, gt=0)
    # The oldest unpublished outbox row: the relay is stalled or the bus is down.
    outbox_max_age_seconds: float = Field(default=60.0, gt=0)
    # Schema validation failures counted over a window.
    schema_violation_window_seconds: float = Field(default=900.0, gt=0)
    # Anti-flapping: a firing alert resolves once its value is at most threshold x hysteresis
    # and has stayed there for resolve_after_seconds.
    hysteresis: float = Field(default=0.8, gt=0, le=1)
    resolve_after_seconds: float = Field(default=60.0, ge=0)
    disabled: frozenset[str] = frozenset()  # rule names not evaluated


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


# Inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SagaTypeSample:
    """Durations of one saga type: the p95 of completed sagas and the slowest recent or running one."""

    saga_type: str
    completed: int  # how many completed sagas the p95 rests on
    p95_seconds: float
    slowest_seconds: float  # the longest running saga's age, or the slowest completed recently


@dataclass(frozen=True, slots=True)
class CompensationWindow:
    """Sagas of one type that finished during the compensation window, and how many compensated."""

    saga_type: str
    finished: int
    compensated: int


@dataclass(frozen=True, slots=True)
class DeadLetterDepth:
    consumer: str
    error_type: str
    depth: int


@dataclass(frozen=True, slots=True)
class LagPoint:
    at: datetime
    lag: int


@dataclass(frozen=True, slots=True)
class LagSeries:
    """Lag samples of one consumer group on one topic (all partitions summed), oldest first."""

    group: str
    topic: str
    points: tuple[LagPoint, ...]

    @property
    def current(self) -> int:
        return self.points[-1].lag if self.points else 0


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """One snapshot of everything the built-in rules look at, gathered by an :class:`AlertSource`."""

    sagas: Sequence[SagaTypeSample] = ()
    stuck_sagas: Mapping[str, int] = field(default_factory=dict)  # saga type -> sagas past step timeout
    compensations: Sequence[CompensationWindow] = ()
    dead_letters: Sequence[DeadLetterDepth] = ()
    lag: Sequence[LagSeries] = ()
    outbox_oldest_age_seconds: float | None = None  # None: the outbox is empty
    schema_violations: Mapping[str, int] = field(default_factory=dict)  # consumer -> count in window


class AlertSource(Protocol):
    """Gathers :class:`AlertInputs` from the database, the bus and the saga store."""

    async def sample(self) -> AlertInputs:
        """One snapshot of the current observations."""


class AlertSink(Protocol):
    """Where alert events go; normally the transactional outbox."""

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        """Send ``envelope`` on ``topic`` if, and only if, ``tx`` commits."""


def lag_growing(series: LagSeries, window: timedelta) -> bool:
    """Whether lag rose through the last ``window`` without ever falling: a stopped consumer.

    The samples must cover the window (one at or before its start), so a short
    burst right after start-up is not taken for growth.
    """
    if not series.points:
        return False
    start = series.points[-1].at - window
    covering = [point for point in series.points if point.at <= start]
    if not covering:
        return False
    recent = [covering[-1], *(point for point in series.points if point.at > start)]
    if any(later.lag < earlier.lag for earlier, later in itertools.pairwise(recent)):
        return False
    # It must rise in both halves of the window: a flat lag that stepped up once is a burst, not a trend.
    middle = [point for point in recent if point.at <= start + window / 2][-1]
    return recent[0].lag < middle.lag < recent[-1].lag


class LagHistory:
    """Keeps recent lag samples per (group, topic) so a sampler can hand :class:`LagSeries` over."""

    def __init__(self, keep: timedelta) -> None:
        self._keep = keep
        self._points: dict[tuple[str, str], deque[LagPoint]] = defaultdict(deque)

    def add(self, group: str, topic: str, lag: int, at: datetime) -> None:
        points = self._points[(group, topic)]
        points.append(LagPoint(at, lag))
        # Keep one point older than the window: lag_growing needs a sample at its start.
        while len(points) > 2 and points[1].at <= at - self._keep:
            points.popleft()

    def series(self) -> list[LagSeries]:
        return [LagSeries(group, topic, tuple(points)) for (group, topic), points in self._points.items()]


# Rules --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One alert's value under one rule: fires above ``threshold``, clears at or below ``clear_at``."""

    labels: Mapping[str, str]
    value: float
    threshold: float
    clear_at: float
    summary: str


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    severity: Severity
    for_: timedelta
    description: str
    read: Callable[[AlertInputs], Iterable[Reading]]


def _clear_at(threshold: float, settings: AlertSettings) -> float:
    return threshold * settings.hysteresis


def _saga_slow(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    def read(inputs: AlertInputs) -> Iterable[Reading]:
        for sample in inputs.sagas:
            if sample.completed < settings.saga_slow_min_samples or sample.p95_seconds <= 0:
                continue
            limit = settings.saga_slow_factor * sample.p95_seconds
            yield Reading(
                {"saga_type": sample.saga_type},
                sample.slowest_seconds,
                limit,
                _clear_at(limit, settings),
                f"a {sample.saga_type} saga took {sample.slowest_seconds:.1f}s, over "
                f"{settings.saga_slow_factor:g}x the p95 of its type ({sample.p95_seconds:.1f}s)",
            )

    return read


def _saga_stuck(inputs: AlertInputs) -> Iterable[Reading]:
    for saga_type, count in inputs.stuck_sagas.items():
        yield Reading(
            {"saga_type": saga_type}, count, 0, 0, f"{count} {saga_type} saga(s) past their step timeout"
        )


def _compensation_rate(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    def read(inputs: AlertInputs) -> Iterable[Reading]:
        for window in inputs.compensations:
            if window.finished < settings.compensation_min_sagas:
                continue
            rate = window.compensated / window.finished
            yield Reading(
                {"saga_type": window.saga_type},
                rate,
                settings.compensation_rate,
                _clear_at(settings.compensation_rate, settings),
                f"{rate:.1%} of {window.saga_type} sagas compensated "
                f"({window.compensated} of {window.finished})",
            )

    return read


def _dead_letters(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    def read(inputs: AlertInputs) -> Iterable[Reading]:
        for depth in inputs.dead_letters:
            threshold = settings.dead_letter_depth
            yield Reading(
                {"consumer": depth.consumer, "error_type": depth.error_type},
                depth.depth,
                threshold,
                _clear_at(threshold, settings),
                f"{depth.depth} dead letter(s) for {depth.consumer} ({depth.error_type})",
            )

    return read


def _lag_high(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    def read(inputs: AlertInputs) -> Iterable[Reading]:
        for series in inputs.lag:
            yield Reading(
                {"group": series.group, "topic": series.topic},
                series.current,
                settings.consumer_lag_max,
                _clear_at(settings.consumer_lag_max, settings),
                f"{series.group} is {series.current} message(s) behind on {series.topic}",
            )

    return read


def _lag_growing(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    window = timedelta(seconds=settings.lag_growth_window_seconds)

    def read(inputs: AlertInputs) -> Iterable[Reading]:
        for series in inputs.lag:
            growing = lag_growing(series, window)
            yield Reading(
                {"group": series.group, "topic": series.topic},
                1.0 if growing else 0.0,
                0,
                0,
                f"{series.group} lag on {series.topic} grew for {window.total_seconds():g}s "
                f"(now {series.current}): is the consumer running?",
            )

    return read


def _outbox_stalled(settings: AlertSettings) -> Callable[[AlertInputs], Iterable[Reading]]:
    def read(inputs: AlertInputs) -> Iterable[Reading]:
        age = inputs.outbox_oldest_age_seconds or 0.0
        limit = settings.outbox_max_age_seconds
        yield Reading(
            {},
            age,
            limit,
            _clear_at(limit, settings),
            f"the oldest unpublished outbox row is {age:.0f}s old: is the relay or the bus down?",
        )

    return read


def _schema_violations(inputs: AlertInputs) -> Iterable[Reading]:
    for consumer, count in inputs.schema_violations.items():
        yield Reading(
            {"consumer": consumer}, count, 0, 0, f"{count} message(s) for {consumer} failed schema validation"
        )


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def default_rules(settings: AlertSettings) -> tuple[Rule, ...]:
    """The built-in rules with ``settings`` applied, minus the disabled ones."""
    seconds = _seconds
    rules = (
        Rule("SagaSlow", Severity.WARNING, seconds(settings.saga_slow_for_seconds),
             "A saga took more than the configured factor of the p95 of its type.",
             _saga_slow(settings)),
        Rule("SagaStuck", Severity.CRITICAL, seconds(settings.saga_stuck_for_seconds),
             "A saga has had no transition for longer than its step timeout.", _saga_stuck),
        Rule("SagaCompensationRateHigh", Severity.WARNING, timedelta(0),
             "Too many sagas of one type compensated over the window.", _compensation_rate(settings)),
        Rule("DeadLetters", Severity.CRITICAL, timedelta(0),
             "Messages are waiting in the dead-letter queue.", _dead_letters(settings)),
        Rule("ConsumerLagHigh", Severity.WARNING, seconds(settings.consumer_lag_for_seconds),
             "A consumer group is far behind on a topic.", _lag_high(settings)),
        Rule("ConsumerLagGrowing", Severity.WARNING, timedelta(0),
             "A consumer group's lag grew over the whole window.", _lag_growing(settings)),
        Rule("OutboxStalled", Severity.CRITICAL, timedelta(0),
             "The oldest unpublished outbox row is too old.", _outbox_stalled(settings)),
        Rule("SchemaViolation", Severity.CRITICAL, timedelta(0),
             "Messages failed schema validation.", _schema_violations),
    )  # fmt: skip
    return tuple(rule for rule in rules if rule.name not in settings.disabled)


# The engine ---------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    PENDING = "pending"  # condition holds, waiting for `for`
    FIRING = "firing"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as operators and the dashboard see it."""

    name: str
    severity: Severity
    labels: Mapping[str, str]
    summary: str
    value: float
    threshold: float
    fired_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.name, self.labels)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.fingerprint,
            "name": self.name,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "firedAt": format_time(self.fired_at) if self.fired_at else None,
        }
        if self.resolved_at:
            body["resolvedAt"] = format_time(self.resolved_at)
        return body


def fingerprint(name: str, labels: Mapping[str, str]) -> str:
    """A stable identity for a rule and its labels: ``DeadLetters{consumer="billing",...}``."""
    inner = ",".join(f"{key}={json.dumps(labels[key])}" for key in sorted(labels))
    return f"{name}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the engine remembers about one alert between evaluations."""

    alert: Alert
    phase: Phase
    since: datetime  # when the condition started to hold
    clear_since: datetime | None = None  # while firing: when the value went under the clear level


class TransitionKind(enum.StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertTransition:
    kind: TransitionKind
    alert: Alert

    @property
    def event_type(self) -> str:
        return ALERT_FIRED if self.kind is TransitionKind.FIRED else ALERT_RESOLVED

    def to_envelope(self, producer: str = ALERTS_PRODUCER) -> Envelope:
        """The ``ops.alerts`` system event for this transition, keyed by the alert's fingerprint."""
        return Envelope(
            event_type=self.event_type,
            payload={"alert": self.alert.to_json()},
            entity_key=self.alert.fingerprint,
            category=Category.SYSTEM,
            producer=producer,
            title=f"{self.alert.name} {self.kind.value}",
            description=self.alert.summary,
            priority="1" if self.alert.severity is Severity.CRITICAL else "3",
        )


class AlertEngine:
    """Evaluates rules over snapshots; each alert fires once and resolves once (pure, no I/O)."""

    def __init__(self, rules: Sequence[Rule], *, resolve_after: timedelta = timedelta(seconds=60)) -> None:
        self.rules = tuple(rules)
        self.resolve_after = resolve_after
        self._states: dict[str, AlertState] = {}

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> AlertEngine:
        return cls(default_rules(settings), resolve_after=timedelta(seconds=settings.resolve_after_seconds))

    def evaluate(self, inputs: AlertInputs, now: datetime) -> list[AlertTransition]:
        """Advance every alert to ``now``; returns what fired and what resolved, in rule order."""
        transitions: list[AlertTransition] = []
        seen: set[str] = set()
        for rule in self.rules:
            for reading in rule.read(inputs):
                key = fingerprint(rule.name, reading.labels)
                seen.add(key)
                transitions.extend(self._advance(rule, key, reading, now))
        # An alert whose subject vanished (a consumer removed, a queue drained away) reads as clear.
        for key in [key for key in self._states if key not in seen]:
            transitions.extend(self._clear(key, None, now))
        return transitions

    def active_alerts(self) -> list[Alert]:
        """The firing alerts, most severe first, then oldest first."""
        firing = [state.alert for state in self._states.values() if state.phase is Phase.FIRING]
        return sorted(firing, key=lambda alert: (alert.severity is not Severity.CRITICAL, alert.fired_at))

    def states(self) -> list[AlertState]:
        """Every pending or firing alert: what :class:`AlertStateStore` persists."""
        return list(self._states.values())

    def restore(self, states: Iterable[AlertState]) -> None:
        """Replace the engine's memory (after a restart, or after a failed save)."""
        self._states = {state.alert.fingerprint: state for state in states}

    def _advance(self, rule: Rule, key: str, reading: Reading, now: datetime) -> list[AlertTransition]:
        if reading.value > reading.threshold:
            return self._hold(rule, key, reading, now)
        if reading.value <= reading.clear_at:
            return self._clear(key, reading, now)
        # Between the clear level and the threshold: a firing alert keeps firing, nothing starts.
        state = self._states.get(key)
        if state is not None and state.phase is Phase.PENDING:
            del self._states[key]
        elif state is not None:
            self._states[key] = replace(state, clear_since=None, alert=_updated(state.alert, reading))
        return []

    def _hold(self, rule: Rule, key: str, reading: Reading, now: datetime) -> list[AlertTransition]:
        state = self._states.get(key)
        if state is None:
            alert = Alert(rule.name, rule.severity, dict(reading.labels), reading.summary,
                          reading.value, reading.threshold)  # fmt: skip
            state = AlertState(alert, Phase.PENDING, since=now)
        state = replace(state, alert=_updated(state.alert, reading), clear_since=None)
        if state.phase is Phase.PENDING and now - state.since >= rule.for_:
            state = replace(state, phase=Phase.FIRING, alert=replace(state.alert, fired_at=now))
            self._states[key] = state
            return [AlertTransition(TransitionKind.FIRED, state.alert)]
        self._states[key] = state
        return []

    def _clear(self, key: str, reading: Reading | None, now: datetime) -> list[AlertTransition]:
        state = self._states.get(key)
        if state is None:
            return []
        if state.phase is Phase.PENDING:
            del self._states[key]
            return []
        alert = _updated(state.alert, reading) if reading else state.alert
        clear_since = state.clear_since or now
        if now - clear_since < self.resolve_after:
            self._states[key] = replace(state, alert=alert, clear_since=clear_since)
            return []
        del self._states[key]
        return [AlertTransition(TransitionKind.RESOLVED, replace(alert, resolved_at=now))]


def _updated(alert: Alert, reading: Reading) -> Alert:
    return replace(alert, value=reading.value, threshold=reading.threshold, summary=reading.summary)


# Persistence and the I/O shell --------------------------------------------------------------

ALERT_TABLES = TableSet(
    name="alerts",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS alert_state (
            fingerprint TEXT PRIMARY KEY, phase TEXT NOT NULL, since TEXT NOT NULL,
            clear_since TEXT, alert TEXT NOT NULL)""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS alert_state (
            fingerprint TEXT PRIMARY KEY, phase TEXT NOT NULL, since TEXT NOT NULL,
            clear_since TEXT, alert TEXT NOT NULL)""",
    ],
)


def _alert_from_json(body: Mapping[str, Any]) -> Alert:
    fired = body.get("firedAt")
    return Alert(
        name=str(body["name"]),
        severity=Severity(body["severity"]),
        labels={str(k): str(v) for k, v in body["labels"].items()},
        summary=str(body["summary"]),
        value=float(body["value"]),
        threshold=float(body["threshold"]),
        fired_at=parse_time(fired) if fired else None,
    )


class AlertStateStore:
    """The engine's memory in the database, so a restarted process neither re-fires nor forgets."""

    async def load(self, tx: Transaction) -> list[AlertState]:
        rows = await tx.fetchall("SELECT phase, since, clear_since, alert FROM alert_state")
        return [
            AlertState(
                alert=_alert_from_json(orjson.loads(alert)),
                phase=Phase(phase),
                since=parse_time(since),
                clear_since=parse_time(clear_since) if clear_since else None,
            )
            for phase, since, clear_since, alert in rows
        ]

    async def save(self, tx: Transaction, states: Iterable[AlertState]) -> None:
        """Replace the stored states with ``states`` (a handful of rows)."""
        await tx.execute("DELETE FROM alert_state")
        await tx.executemany(
            "INSERT INTO alert_state (fingerprint, phase, since, clear_since, alert) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    state.alert.fingerprint,
                    state.phase.value,
                    format_time(state.since),
                    format_time(state.clear_since) if state.clear_since else None,
                    orjson.dumps(state.alert.to_json()).decode(),
                )
                for state in states
            ],
        )


class AlertMonitor:
    """Samples, evaluates, and commits state and alert events together.

    Run ONE monitor per platform (the lead's sampler task calls :meth:`check`
    every few seconds): two monitors on one database would each fire.
    """

    def __init__(
        self,
        database: Database,
        source: AlertSource,
        sink: AlertSink,
        engine: AlertEngine,
        *,
        store: AlertStateStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.source = source
        self.sink = sink
        self.engine = engine
        self.store = store or AlertStateStore()
        self.clock = clock
        self._loaded = False

    async def load(self) -> None:
        """Create the table and restore the engine's memory; idempotent."""
        await self.database.create_tables(ALERT_TABLES)
        async with self.database.snapshot() as tx:
            self.engine.restore(await self.store.load(tx))
        self._loaded = True

    async def check(self) -> list[AlertTransition]:
        """One evaluation; its transitions are emitted iff the new state commits."""
        if not self._loaded:
            await self.load()
        inputs = await self.source.sample()
        before = self.engine.states()
        transitions = self.engine.evaluate(inputs, self.clock())
        after = self.engine.states()
        if after == before:
            return transitions
        try:
            async with self.database.transaction() as tx:
                await self.store.save(tx, after)
                for transition in transitions:
                    await self.sink.emit(tx, transition.to_envelope(), ALERT_EVENTS.name)
        except BaseException:
            self.engine.restore(before)  # evaluated again next time: nothing fired twice or lost
            raise
        for transition in transitions:
            log.warning(
                "alert %s: %s", transition.kind.value, transition.alert.summary,
                extra={"alert": transition.alert.fingerprint, "severity": transition.alert.severity.value},
            )  # fmt: skip
        return transitions

    def active_alerts(self) -> list[Alert]:
        return self.engine.active_alerts()


# Prometheus ---------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds, minutes or hours where exact."""
    whole = max(round(seconds), 0)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _number(value: float) -> str:
    return f"{value:g}"


def prometheus_expressions(settings: AlertSettings) -> dict[str, str]:
    """The PromQL condition of each built-in rule, over the metric names of ops/metrics.py."""
    recent = _duration(settings.saga_recent_window_seconds)
    baseline = _duration(settings.saga_baseline_window_seconds)
    window = _duration(settings.compensation_window_seconds)
    finished = f"sum by (saga_type) (increase(strowger_saga_duration_seconds_count[{window}]))"
    buckets = "sum by (saga_type, le) (rate(strowger_saga_duration_seconds_bucket[{}]))"
    completed = f"sum by (saga_type) (increase(strowger_saga_duration_seconds_count[{baseline}]))"
    return {
        "SagaSlow": (
            f"histogram_quantile(0.99, {buckets.format(recent)})"
            f" > {_number(settings.saga_slow_factor)} * histogram_quantile(0.95, {buckets.format(baseline)})"
            f" and on (saga_type) {completed} >= {settings.saga_slow_min_samples}"
        ),
        "SagaStuck": "max by (saga_type) (strowger_sagas_stuck) > 0",
        "SagaCompensationRateHigh": (
            f"sum by (saga_type) (increase(strowger_compensations_total[{window}])) / {finished}"
            f" > {_number(settings.compensation_rate)}"
            f" and on (saga_type) {finished} >= {settings.compensation_min_sagas}"
        ),
        "DeadLetters": (
            f"max by (consumer, error_type) (strowger_dead_letter_depth) > {settings.dead_letter_depth}"
        ),
        "ConsumerLagHigh": f"sum by (group, topic) (strowger_consumer_lag) > {settings.consumer_lag_max}",
        "ConsumerLagGrowing": "max by (group, topic) (strowger_consumer_lag_growing) == 1",
        "OutboxStalled": (
            f"max(strowger_outbox_oldest_age_seconds) > {_number(settings.outbox_max_age_seconds)}"
        ),
        "SchemaViolation": (
            'sum by (consumer) (strowger_dead_letter_depth{error_type="SchemaViolation"}) > 0'
        ),
    }


def _yaml_string(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: no YAML library needed at run time.
    return json.dumps(text)


def prometheus_rules(settings: AlertSettings | None = None) -> str:
    """A Prometheus alerting-rules file equivalent to the built-in rules (``rule_files:``)."""
    settings = settings or load_section(AlertSettings)
    expressions = prometheus_expressions(settings)
    lines = ["groups:", "  - name: strowger", "    rules:"]
    for rule in default_rules(settings):
        lines += [
            f"      - alert: {rule.name}",
            f"        expr: {_yaml_string(expressions[rule.name])}",
            f"        for: {_duration(rule.for_.total_seconds())}",
            # The resolve delay (Prometheus >= 2.42); hysteresis has no PromQL equivalent.
            f"        keep_firing_for: {_duration(settings.resolve_after_seconds)}",
            "        labels:",
            f"          severity: {rule.severity.value}",
            "        annotations:",
            f"          summary: {_yaml_string(_prometheus_summary(rule.name))}",
            f"          description: {_yaml_string(rule.description)}",
        ]
    return "\n".join(lines) + "\n"


_PROMETHEUS_SUMMARIES = {
    "SagaSlow": "{{ $labels.saga_type }} sagas are slower than usual",
    "SagaStuck": "{{ $value }} {{ $labels.saga_type }} saga(s) past their step timeout",
    "SagaCompensationRateHigh": (
        "{{ $value | humanizePercentage }} of {{ $labels.saga_type }} sagas compensated"
    ),
    "DeadLetters": "{{ $value }} dead letter(s) for {{ $labels.consumer }} ({{ $labels.error_type }})",
    "ConsumerLagHigh": "{{ $labels.group }} is {{ $value }} message(s) behind on {{ $labels.topic }}",
    "ConsumerLagGrowing": "{{ $labels.group }} lag on {{ $labels.topic }} keeps growing",
    "OutboxStalled": "the oldest unpublished outbox row is {{ $value | humanizeDuration }} old",
    "SchemaViolation": "messages for {{ $labels.consumer }} failed schema validation",
}


def _prometheus_summary(name: str) -> str:
    return _PROMETHEUS_SUMMARIES.get(name, name)
