"""The activation simulator's fault and latency rules (pure)."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from strowger.components.activation.faults import (
    ActivationSettings,
    Step,
    activation_fault,
    latency_of,
    rollback_fault,
)

STEPS = [Step("activate", "svc-access", "SS-ACCESS"), Step("activate", "svc-internet", "SS-INTERNET")]


def settings(**values: object) -> ActivationSettings:
    return ActivationSettings().changed(values)


def test_a_quiet_network_never_fails() -> None:
    rng = random.Random(1)
    assert all(activation_fault(settings(), ["SO-1"], STEPS, rng) is None for _ in range(100))
    assert rollback_fault(settings(), ["SO-1"], rng) is None


def test_a_listed_order_fails_at_its_first_step_or_at_the_listed_steps() -> None:
    rng = random.Random(1)
    first = activation_fault(settings(fail_orders={"PO-9"}), ["SO-1", "PO-9"], STEPS, rng)
    listed = activation_fault(
        settings(fail_orders={"SO-1"}, fail_steps={"SS-INTERNET"}), ["SO-1"], STEPS, rng
    )
    other = activation_fault(settings(fail_orders={"SO-2"}), ["SO-1"], STEPS, rng)

    assert first is not None and first.step == STEPS[0] and not first.permanent
    assert listed is not None and listed.step == STEPS[1]
    assert other is None


def test_listed_steps_fail_for_every_order_when_no_order_is_listed() -> None:
    fault = activation_fault(
        settings(fail_steps={"svc-internet"}, failure_mode="permanent"), ["SO-7"], STEPS, random.Random(1)
    )
    assert fault is not None and fault.step == STEPS[1] and fault.permanent
    assert "permanent" in fault.message() and "svc-internet" in fault.message()


def test_the_failure_rate_applies_per_step() -> None:
    rng = random.Random(42)
    runs = 2000
    failed = sum(
        activation_fault(settings(failure_rate=0.25), ["SO"], STEPS, rng) is not None for _ in range(runs)
    )
    expected = 1 - 0.75**2  # two steps, each failing with 0.25
    assert abs(failed / runs - expected) < 0.05
    always = activation_fault(settings(failure_rate=1.0), ["SO"], STEPS, rng)
    assert always is not None and always.step == STEPS[0]


def test_rollback_faults_by_rate_or_by_order() -> None:
    rng = random.Random(3)
    assert rollback_fault(settings(fail_rollback_orders={"SO-1"}), ["SO-1"], rng) is not None
    assert rollback_fault(settings(fail_rollback_rate=1.0), ["SO-1"], rng) is not None
    assert rollback_fault(settings(fail_rollback_orders={"SO-2"}), ["SO-1"], rng) is None


def test_latency_is_fixed_plus_bounded_jitter() -> None:
    rng = random.Random(5)
    assert latency_of(settings(latency_ms=200), rng) == pytest.approx(0.2)
    delays = [latency_of(settings(latency_ms=100, jitter_ms=50), rng) for _ in range(200)]
    assert all(0.1 <= delay <= 0.15 for delay in delays) and max(delays) > min(delays)


def test_settings_are_validated_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        settings(failure_rate=1.5)
    with pytest.raises(ValidationError):
        settings(failure_mode="sometimes")
    with pytest.raises(ValidationError):
        settings(no_such_knob=1)
    monkeypatch.setenv("STROWGER_ACTIVATION_LATENCY_MS", "250")
    monkeypatch.setenv("STROWGER_ACTIVATION_FAIL_ORDERS", '["SO-1", "SO-2"]')
    monkeypatch.setenv("STROWGER_ACTIVATION_FAILURE_MODE", "permanent")
    loaded = ActivationSettings()
    assert loaded.latency_ms == 250 and loaded.fail_orders == {"SO-1", "SO-2"} and loaded.permanent()
