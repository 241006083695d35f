"""Alert rules under induced conditions: fire once, hold, resolve once, never flap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from strowger.events.envelope import Category
from strowger.ops.alerts import (
    ALERT_FIRED,
    ALERT_RESOLVED,
    AlertEngine,
    AlertInputs,
    AlertSettings,
    AlertTransition,
    CompensationWindow,
    DeadLetterDepth,
    LagHistory,
    LagPoint,
    LagSeries,
    SagaTypeSample,
    TransitionKind,
    default_rules,
    lag_growing,
    prometheus_rules,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def settings(**overrides: object) -> AlertSettings:
    return AlertSettings(**overrides)  # type: ignore[arg-type]


def engine(**overrides: object) -> AlertEngine:
    return AlertEngine.from_settings(settings(**{"resolve_after_seconds": 60, **overrides}))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(transitions: list[AlertTransition]) -> list[tuple[str, str]]:
    return [(t.kind.value, t.alert.fingerprint) for t in transitions]


def run(alerts: AlertEngine, timeline: Sequence[tuple[float, AlertInputs]]) -> list[tuple[float, str, str]]:
    """Evaluate a sequence of (second, inputs); every transition with the second it happened."""
    happened = []
    for second, inputs in timeline:
        for transition in alerts.evaluate(inputs, at(second)):
            happened.append((second, transition.kind.value, transition.alert.name))
    return happened


def dlq(depth: int, consumer: str = "billing") -> AlertInputs:
    return AlertInputs(dead_letters=[DeadLetterDepth(consumer, "InvalidStateTransition", depth)])


# Dead letters: a failing consumer ---------------------------------------------------------


def test_a_failing_consumer_fires_once_while_dead_letters_wait_and_resolves_once() -> None:
    alerts = engine()
    timeline = [
        (0, dlq(0)),
        (10, dlq(1)),
        (20, dlq(3)),
        (30, dlq(3)),
        (40, dlq(0)),
        (100, dlq(0)),
        (200, dlq(0)),
    ]
    assert run(alerts, timeline) == [(10, "fired", "DeadLetters"), (100, "resolved", "DeadLetters")]


def test_the_fired_alert_carries_labels_value_threshold_and_becomes_an_ops_alerts_event() -> None:
    alerts = engine()
    [fired] = alerts.evaluate(dlq(2), T0)
    assert fired.kind is TransitionKind.FIRED
    assert fired.alert.labels == {"consumer": "billing", "error_type": "InvalidStateTransition"}
    assert (fired.alert.value, fired.alert.threshold, fired.alert.fired_at) == (2, 0, T0)
    envelope = fired.to_envelope()
    assert envelope.event_type == ALERT_FIRED
    assert envelope.category is Category.SYSTEM
    body = envelope.payload["alert"]
    assert body["name"] == "DeadLetters" and body["severity"] == "critical"
    assert body["labels"]["consumer"] == "billing"
    assert body["firedAt"] == "2025-01-01T12:00:00.000Z"
    assert "2 dead letter(s) for billing" in body["summary"]
    assert envelope.entity_key == fired.alert.fingerprint


def test_the_resolved_event_says_when_it_fired_and_when_it_resolved() -> None:
    alerts = engine()
    alerts.evaluate(dlq(1), T0)
    alerts.evaluate(dlq(0), at(1))
    [resolved] = alerts.evaluate(dlq(0), at(61))
    envelope = resolved.to_envelope()
    assert envelope.event_type == ALERT_RESOLVED
    assert envelope.payload["alert"]["firedAt"] == "2025-01-01T12:00:00.000Z"
    assert envelope.payload["alert"]["resolvedAt"] == "2025-01-01T12:01:01.000Z"


def test_each_consumer_is_its_own_alert() -> None:
    alerts = engine()
    both = AlertInputs(
        dead_letters=[
            DeadLetterDepth("billing", "InvalidStateTransition", 1),
            DeadLetterDepth("inventory", "InvalidStateTransition", 1),
        ]
    )
    assert len(alerts.evaluate(both, T0)) == 2
    assert alerts.evaluate(dlq(1, "billing"), at(1)) == []  # inventory vanished: clearing, not resolved yet
    [resolved] = alerts.evaluate(dlq(1, "billing"), at(70))
    assert resolved.alert.labels["consumer"] == "inventory"
    assert [alert.labels["consumer"] for alert in alerts.active_alerts()] == ["billing"]


def test_a_condition_that_returns_within_the_resolve_delay_does_not_flap() -> None:
    alerts = engine()
    flapping = [(second, dlq(1 if (second // 10) % 2 == 0 else 0)) for second in range(0, 300, 10)]
    assert run(alerts, flapping) == [(0, "fired", "DeadLetters")]
    assert alerts.active_alerts()[0].name == "DeadLetters"


# Consumer lag: a stopped consumer ---------------------------------------------------------


def lag_inputs(history: LagHistory) -> AlertInputs:
    return AlertInputs(lag=history.series())


def test_a_stopped_consumer_fires_lag_growing_once_after_the_window() -> None:
    alerts = engine(lag_growth_window_seconds=300)
    history = LagHistory(keep=timedelta(seconds=300))
    happened = []
    for second in range(0, 1200, 30):
        lag = 5 if second < 300 else 5 + (second - 300)  # consumer stops at 300s, producers go on
        history.add("billing", "bss.ordering.events", lag, at(second))
        happened += [
            (second, t.kind.value, t.alert.name) for t in alerts.evaluate(lag_inputs(history), at(second))
        ]
    # At 480 the window (180..480) rises through both halves (330 > 180's lag, 480 > 330's).
    assert happened == [(480, "fired", "ConsumerLagGrowing")]


def test_a_consumer_that_catches_up_resolves_lag_growing_once() -> None:
    alerts = engine(lag_growth_window_seconds=120, resolve_after_seconds=60)
    history = LagHistory(keep=timedelta(seconds=120))
    happened = []
    lags = [10, 20, 30, 40, 50, 60, 40, 20, 0, 0, 0, 0, 0, 0]
    for step, lag in enumerate(lags):
        second = step * 30
        history.add("billing", "t", lag, at(second))
        happened += [(second, t.kind.value) for t in alerts.evaluate(lag_inputs(history), at(second))]
    assert happened == [(120, "fired"), (240, "resolved")]


def test_lag_growing_needs_samples_covering_the_window_and_no_fall() -> None:
    window = timedelta(seconds=100)
    rising = LagSeries("g", "t", tuple(LagPoint(at(s), s) for s in range(0, 101, 10)))
    assert lag_growing(rising, window)
    too_short = LagSeries("g", "t", tuple(LagPoint(at(s), s) for s in range(0, 91, 10)))
    assert not lag_growing(too_short, window)
    dipped = LagSeries(
        "g", "t", tuple(LagPoint(at(s), 50 if s == 50 else s + 100) for s in range(0, 101, 10))
    )
    assert not lag_growing(dipped, window)
    flat = LagSeries("g", "t", tuple(LagPoint(at(s), 7) for s in range(0, 101, 10)))
    assert not lag_growing(flat, window)
    stepped = LagSeries("g", "t", tuple(LagPoint(at(s), 5 if s < 100 else 500) for s in range(0, 101, 10)))
    assert not lag_growing(stepped, window)  # one burst at the end is not a trend


def test_high_lag_fires_only_after_its_for_duration_and_clears_below_the_hysteresis_level() -> None:
    alerts = engine(consumer_lag_max=1000, consumer_lag_for_seconds=120, hysteresis=0.8)

    def lag(value: int) -> AlertInputs:
        return AlertInputs(lag=[LagSeries("g", "t", (LagPoint(T0, value),))])

    timeline = [
        (0, lag(1500)),
        (60, lag(400)),  # a spike shorter than `for`: nothing
        (100, lag(1500)),
        (200, lag(1500)),
        (220, lag(1500)),  # held 120s: fires
        (300, lag(900)),  # under the threshold but above 800: still firing, no resolve timer
        (400, lag(1001)),
        (500, lag(900)),
        (600, lag(700)),  # under the clear level
        (700, lag(700)),  # 100s later: resolved
    ]
    assert run(alerts, timeline) == [(220, "fired", "ConsumerLagHigh"), (700, "resolved", "ConsumerLagHigh")]


# Sagas ----------------------------------------------------------------------------------------


def test_a_slow_saga_fires_over_twice_the_p95_of_its_type() -> None:
    alerts = engine()

    def slowest(seconds: float, completed: int = 100) -> AlertInputs:
        return AlertInputs(sagas=[SagaTypeSample("ProductOrderSaga", completed, 10.0, seconds)])

    timeline = [(0, slowest(15)), (10, slowest(19.9)), (20, slowest(25)), (30, slowest(40)),
                (40, slowest(12)), (110, slowest(12))]  # fmt: skip
    assert run(alerts, timeline) == [(20, "fired", "SagaSlow"), (110, "resolved", "SagaSlow")]
    assert run(engine(), [(0, slowest(100, completed=5))]) == []  # a p95 of 5 sagas means nothing


def test_a_stuck_saga_fires_and_resolves() -> None:
    alerts = engine()
    timeline = [(0, AlertInputs(stuck_sagas={"ProductOrderSaga": 0})),
                (10, AlertInputs(stuck_sagas={"ProductOrderSaga": 2})),
                (20, AlertInputs(stuck_sagas={"ProductOrderSaga": 1})),
                (30, AlertInputs(stuck_sagas={"ProductOrderSaga": 0})),
                (95, AlertInputs(stuck_sagas={}))]  # fmt: skip
    assert run(alerts, timeline) == [(10, "fired", "SagaStuck"), (95, "resolved", "SagaStuck")]


def test_a_burst_of_compensations_fires_the_compensation_rate_alert() -> None:
    alerts = engine()

    def window(finished: int, compensated: int) -> AlertInputs:
        return AlertInputs(compensations=[CompensationWindow("ProductOrderSaga", finished, compensated)])

    timeline = [
        (0, window(100, 2)),
        (10, window(100, 5)),  # exactly 5%: not above
        (20, window(100, 12)),  # burst
        (30, window(100, 5)),  # between 4% and 5%: holds
        (100, window(100, 3)),
        (170, window(100, 3)),
    ]
    assert run(alerts, timeline) == [
        (20, "fired", "SagaCompensationRateHigh"),
        (170, "resolved", "SagaCompensationRateHigh"),
    ]
    assert run(engine(), [(0, window(4, 2))]) == []  # 2 of 4 is noise under the minimum volume


# Outbox and schema ---------------------------------------------------------------------------


def test_an_old_outbox_row_fires_outbox_stalled() -> None:
    alerts = engine(outbox_max_age_seconds=60)
    timeline = [(0, AlertInputs(outbox_oldest_age_seconds=1)),
                (60, AlertInputs(outbox_oldest_age_seconds=61)),
                (70, AlertInputs(outbox_oldest_age_seconds=71)), (80, AlertInputs()),
                (140, AlertInputs())]  # fmt: skip
    assert run(alerts, timeline) == [(60, "fired", "OutboxStalled"), (140, "resolved", "OutboxStalled")]


def test_a_schema_violation_fires_the_schema_alert() -> None:
    alerts = engine()
    [fired] = alerts.evaluate(AlertInputs(schema_violations={"billing": 1}), T0)
    assert (fired.alert.name, fired.alert.severity.value, fired.alert.labels) == (
        "SchemaViolation",
        "critical",
        {"consumer": "billing"},
    )


def test_a_disabled_rule_is_not_evaluated() -> None:
    alerts = engine(disabled=frozenset({"DeadLetters"}))
    assert alerts.evaluate(dlq(5), T0) == []


def test_settings_come_from_strowger_alerts_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROWGER_ALERTS_CONSUMER_LAG_MAX", "42")
    monkeypatch.setenv("STROWGER_ALERTS_DISABLED", '["SagaSlow"]')
    loaded = AlertSettings()
    assert loaded.consumer_lag_max == 42
    assert "SagaSlow" not in [rule.name for rule in default_rules(loaded)]


# Restart ----------------------------------------------------------------------------------------


def test_a_restored_engine_does_not_fire_again_and_still_resolves() -> None:
    first = engine()
    first.evaluate(dlq(1), T0)
    second = engine()
    second.restore(first.states())
    assert second.evaluate(dlq(1), at(10)) == []
    second.evaluate(dlq(0), at(20))
    assert kinds(second.evaluate(dlq(0), at(90))) == [("resolved", first.active_alerts()[0].fingerprint)]


# Prometheus rules ------------------------------------------------------------------------------


@pytest.fixture
def rules_file() -> Iterator[dict[str, Any]]:
    yield yaml.safe_load(prometheus_rules(settings(consumer_lag_max=5000, consumer_lag_for_seconds=180)))


def test_the_prometheus_rules_file_has_one_rule_per_built_in_rule(rules_file: dict[str, Any]) -> None:
    [group] = rules_file["groups"]
    assert group["name"] == "strowger"
    names = [rule["alert"] for rule in group["rules"]]
    assert names == [rule.name for rule in default_rules(AlertSettings())]
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert "strowger_" in rule["expr"]


def test_the_prometheus_rules_carry_the_configured_thresholds(rules_file: dict[str, Any]) -> None:
    [group] = rules_file["groups"]
    by_name = {rule["alert"]: rule for rule in group["rules"]}
    assert by_name["ConsumerLagHigh"]["expr"] == "sum by (group, topic) (strowger_consumer_lag) > 5000"
    assert by_name["ConsumerLagHigh"]["for"] == "3m"
    assert by_name["ConsumerLagHigh"]["keep_firing_for"] == "1m"
    assert by_name["OutboxStalled"]["expr"] == "max(strowger_outbox_oldest_age_seconds) > 60"
    assert "strowger_compensations_total[15m]" in by_name["SagaCompensationRateHigh"]["expr"]
    assert "> 0.05" in by_name["SagaCompensationRateHigh"]["expr"]
    assert "2 * histogram_quantile(0.95" in by_name["SagaSlow"]["expr"]
    assert by_name["DeadLetters"]["labels"]["severity"] == "critical"
