"""`strowger bench store` runs both libraries side by side (tiny run: the figures are not checked)."""

from __future__ import annotations

import pytest

from strowger.bench.store import WORKLOADS, render_table, run_store_bench

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_both_libraries_run_every_workload_in_alternating_rounds(
    db: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db == "postgres":
        monkeypatch.setenv("STROWGER_BENCH_POSTGRES_URL", request.getfixturevalue("postgres_url"))
    steps: list[tuple[str, float]] = []
    result = run_store_bench(db, 20, lambda description, done: steps.append((description, done)), rounds=2)
    assert result["iterations"] == 20 and result["rounds"] == 2
    for side in ("eventsourcing", "strowger"):
        assert set(result[side]) == set(WORKLOADS) and all(rate > 0 for rate in result[side].values())
        assert set(result["mean"][side]) == set(WORKLOADS)
    assert result["ratio"]["append_1"] == round(
        result["strowger"]["append_1"] / result["eventsourcing"]["append_1"], 2
    )
    assert steps[-1][1] == 1.0 and len(steps) == 1 + len(WORKLOADS) * 2
    assert render_table(result).row_count == len(WORKLOADS)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="db must be"):
        run_store_bench("mysql", 20)
    with pytest.raises(ValueError, match="rounds"):
        run_store_bench("sqlite", 5, rounds=10)
