"""``strowger bench e2e`` run tiny: every figure there, in the documented shape (no timing asserted)."""

from __future__ import annotations

from typing import Any

import pytest

from strowger.bench.e2e import Plan, render_table, run_e2e_bench
from strowger.bench.e2e_cluster import handled_counts, process_cpu_seconds, run_cluster_e2e_bench
from strowger.bench.e2e_cluster import render_table as render_cluster_table

pytestmark = pytest.mark.integration

ORDERS = 12
TINY = Plan(warm_up_orders=0, paced_seconds=1.0, raw_seconds=0.3)


def check_phase(phase: dict[str, Any], orders: int | None = None) -> None:
    if orders is not None:
        assert phase["orders"] == orders
    assert phase["completed"] == phase["orders"]  # no fault injected: every order completes
    assert phase["not_completed"] == 0
    assert phase["submission_errors"] == {}
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


def test_cluster_bench_reports_every_figure_and_leaves_nothing_behind(
    postgres_url: str, kafka_url: str
) -> None:
    progress: list[tuple[str, float]] = []
    result = run_cluster_e2e_bench(
        1,
        ORDERS,
        lambda text, fraction: progress.append((text, fraction)),
        TINY,
        database_url=postgres_url,
        bus_url=kafka_url,
    )
    assert result["bench"] == "e2e"
    assert result["backend"] == "postgres+kafka"
    assert result["processes"] == 1
    cluster = result["cluster"]
    assert set(cluster["instances"].values()) == {1}
    assert cluster["processes"] == len(cluster["instances"]) > 1
    assert cluster["startup_seconds"] > 0
    check_phase(result["maximum"], ORDERS)
    check_phase(result["paced"])
    for phase in (result["maximum"], result["paced"]):
        assert phase["cluster_cpu_ms_per_order"] > 0  # the component processes did the work
        assert phase["driver_cpu_ms_per_order"] > 0
        split = phase["cluster_cpu_ms_per_order"] + phase["driver_cpu_ms_per_order"]
        assert phase["cpu_ms_per_order"] == pytest.approx(split, abs=0.05)
    assert result["paced"]["offered_rate"] == pytest.approx(
        result["maximum"]["orders_per_second"] / 2, abs=0.1
    )
    assert result["raw_database_tx_per_second"] > 0
    consumers = {stage["consumer"] for stage in result["stages"]}
    chain = {"ordering-validation", "service-ordering", "rom", "activation", "inventory-commands", "billing"}
    assert chain <= consumers  # every stage of the fulfilment chain ran, each in its own process
    for stage in result["stages"]:
        assert stage["applied"] > 0 and stage["failed_or_rejected"] == 0
        assert stage["per_instance"] == [stage["applied"]]  # one instance each
    assert render_cluster_table(result).row_count == 3
    fractions = [fraction for _, fraction in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert_dropped(postgres_url, kafka_url, cluster["id"])


def assert_dropped(postgres_url: str, kafka_url: str, cluster_id: str) -> None:
    """The cluster's schema and namespaced topics are gone once the bench returns."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    with psycopg.connect(postgres_url) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s",
            (f"cluster_{cluster_id}",),
        ).fetchone()
    assert row == (0,)
    admin = AdminClient({"bootstrap.servers": kafka_url.split("://", 1)[1]})
    topics = admin.list_topics(timeout=10).topics
    assert not [name for name in topics if name.startswith(f"cluster-{cluster_id}.")]


def test_the_cluster_bench_refuses_zero_processes() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        run_cluster_e2e_bench(0, ORDERS)


def test_handled_counts_reads_the_consumer_counters_of_a_metrics_page() -> None:
    exposition = (
        "# HELP strowger_events_handled_total Events handled by a consumer\n"
        "# TYPE strowger_events_handled_total counter\n"
        'strowger_events_handled_total{consumer="billing",topic="t",event_type="E",outcome="applied"} 7.0\n'
        'strowger_events_handled_total{consumer="billing",topic="t",event_type="E",outcome="duplicate"} 2.0\n'
        'strowger_events_handled_created{consumer="billing",topic="t",event_type="E",outcome="applied"} 1e9\n'
        "# HELP other_total Something else\n"
        "# TYPE other_total counter\n"
        "other_total 3.0\n"
    )
    assert handled_counts(exposition) == [("billing", "applied", 7.0), ("billing", "duplicate", 2.0)]


def test_process_cpu_seconds_reads_proc_and_is_zero_for_a_gone_process() -> None:
    import os
    import subprocess
    import sys
    import time

    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU so the reading has something to show
        pass
    assert process_cpu_seconds(os.getpid()) == pytest.approx(time.process_time(), abs=0.1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    assert process_cpu_seconds(int(gone.stdout)) == 0.0  # exited and reaped: no /proc entry
