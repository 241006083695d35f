"""``strowger bench api`` run tiny: every side in the documented shape, every answer a 201 (no timing)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from strowger.bench.api import SIDES, Plan, render_table, run_api_bench
from strowger.bench.cli import bench_app

pytestmark = pytest.mark.integration

REQUESTS = 24
WARM_UP = 4
TINY = Plan(requests=REQUESTS, concurrency=4, warm_up=WARM_UP, max_seconds=120.0)


def check_side(figures: dict[str, Any]) -> None:
    assert figures["requests"] == REQUESTS
    assert figures["errors"] == 0, figures["first_error"]
    assert figures["statuses"] == {"201": REQUESTS}
    # every order the server said it created is stored: warm-up and measured alike
    assert figures["rows_committed"] == figures["rows_expected"] == REQUESTS + WARM_UP
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert figures["per_second"] > 0
    assert figures["server_cpu_us_per_request"] > 0


def test_every_side_answers_201_and_stores_every_order() -> None:
    progress: list[float] = []
    result = run_api_bench(TINY, lambda description, fraction: progress.append(fraction))
    assert result["bench"] == "api"
    assert result["endpoint"] == "POST /tmf-api/productOrderingManagement/v4/productOrder"
    for side in SIDES:
        check_side(result[side])
    assert result["platform"]["consumers"]  # the platform's consumers worked during its run
    assert result["api_only"]["consumers"] == {}  # and not in the API-alone run
    for side in ("platform", "api_only"):  # every stored order is counted in exactly one state
        assert sum(result[side]["order_states"].values()) == result[side]["rows_committed"]
    assert isinstance(result["target_met"], bool)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert render_table(result).row_count == len(SIDES)


def test_the_command_prints_the_json_result_last() -> None:
    arguments = ["api", "--requests", "10", "--warm-up", "0", "--concurrency", "2", "--json"]
    outcome = CliRunner().invoke(bench_app, arguments)
    assert outcome.exit_code == 0, outcome.output
    result = orjson.loads(outcome.stdout.strip().splitlines()[-1])
    assert result["concurrency"] == 2
    assert all(result[side]["errors"] == 0 and result[side]["requests"] == 10 for side in SIDES)
    assert result["machine"]["cpus"] >= 1
