"""``strowger bench e2e`` run tiny: every figure there, in the documented shape (no timing asserted)."""

from __future__ import annotations

from typing import Any

import pytest

from strowger.bench.e2e import Plan, render_table, run_e2e_bench

pytestmark = pytest.mark.integration

ORDERS = 12
TINY = Plan(warm_up_orders=0, paced_seconds=1.0, raw_seconds=0.3)


def check_phase(phase: dict[str, Any], orders: int | None = None) -> None:
    if orders is not None:
        assert phase["orders"] == orders
    assert phase["completed"] == phase["orders"]  # no fault injected: every order completes
    assert phase["not_completed"] == 0
    assert phase["orders_per_second"] > 0
    assert phase["cpu_ms_per_order"] > 0
    ceiling = 1000 / phase["cpu_ms_per_order"]  # the bench rounds it to one decimal
    assert phase["cpu_bound_orders_per_second"] == pytest.approx(ceiling, rel=0.01, abs=0.051)
    latency = phase["completion_ms"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


def check_result(result: dict[str, Any], backend: str) -> None:
    assert result["bench"] == "e2e"
    assert result["backend"] == backend
    check_phase(result["maximum"], ORDERS)
    check_phase(result["paced"])
    assert result["paced"]["offered_rate"] == pytest.approx(
        result["maximum"]["orders_per_second"] / 2, abs=0.1
    )
    assert result["raw_database_tx_per_second"] > 0
    consumers = {stage["consumer"] for stage in result["stages"]}
    assert consumers  # the chain's consumers did the work
    assert all(stage["applied"] > 0 and stage["dead"] == 0 for stage in result["stages"])
    assert len(result["load_average"]["before"]) == 3
    assert render_table(result).row_count == 3


def test_embedded_bench_reports_every_figure() -> None:
    progress: list[tuple[str, float]] = []
    result = run_e2e_bench("embedded", ORDERS, lambda text, fraction: progress.append((text, fraction)), TINY)
    check_result(result, "embedded")
    fractions = [fraction for _, fraction in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


def test_postgres_kafka_bench_reports_every_figure(
    postgres_url: str, kafka_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROWGER_DATABASE_URL", postgres_url)
    monkeypatch.setenv("STROWGER_BUS_URL", kafka_url)
    result = run_e2e_bench("postgres+kafka", ORDERS, plan=TINY)
    check_result(result, "postgres+kafka")


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="postgres\\+kafka"):
        run_e2e_bench("oracle", ORDERS)
