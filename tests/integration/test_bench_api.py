"""``strowger bench api`` run tiny: every side in the documented shape, every answer a 201 (no timing)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from strowger.bench.api import AT_RATE_SIDES, SIDES, Plan, render_table, run_api_bench, target_met
from strowger.bench.cli import bench_app

pytestmark = pytest.mark.integration

REQUESTS = 24
WARM_UP = 4
TINY = Plan(
    requests=REQUESTS, concurrency=4, warm_up=WARM_UP, max_seconds=120.0, rate=200.0, open_connections=4
)


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
    assert result["api_only"]["consumers"] == {}  # and not in the API-alone runs
    assert result["api_only_at_rate"]["consumers"] == {}
    for side in ("platform", "api_only", "platform_at_rate", "api_only_at_rate"):
        assert sum(result[side]["order_states"].values()) == result[side]["rows_committed"]
    for side in AT_RATE_SIDES:
        assert result[side]["offered_per_second"] == 200.0
        assert result[side]["seconds"] >= (REQUESTS - 1) / 200.0  # the schedule was kept, not raced
    assert result["target"]["side"] == "platform_at_rate"
    assert result["target_met"] is False  # 200 req/s offered is not the target's 1,000
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert render_table(result).row_count == len(SIDES)


def test_the_command_prints_the_json_result_last() -> None:
    arguments = ["api", "--requests", "10", "--warm-up", "0", "--concurrency", "2", "--rate", "100", "--json"]
    outcome = CliRunner().invoke(bench_app, arguments)
    assert outcome.exit_code == 0, outcome.output
    result = orjson.loads(outcome.stdout.strip().splitlines()[-1])
    assert result["concurrency"] == 2
    assert all(result[side]["errors"] == 0 and result[side]["requests"] == 10 for side in SIDES)
    assert result["machine"]["cpus"] >= 1


def test_the_target_needs_the_target_rate_every_201_and_the_p99_from_due_times() -> None:
    side = {"offered_per_second": 1000.0, "requests": 10, "errors": 0, "latency_ms": {"p99": 49.0}}
    assert target_met(side)
    assert not target_met({**side, "offered_per_second": 999.0})
    assert not target_met({**side, "errors": 1})
    assert not target_met({**side, "latency_ms": {"p99": 50.0}})
    assert not target_met({**side, "latency_ms": {"p99": None}})
    assert not target_met(None)


async def test_an_open_loop_counts_the_time_requests_waited_behind_a_slow_server() -> None:
    """One connection, a server taking 50 ms, a request due every 10 ms: each waits for the ones
    before it, and the open loop's latencies say so (a closed loop would report ~50 ms each)."""
    import asyncio

    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from strowger.bench.api import _post_at_rate, served

    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return Response(b"{}", status_code=201)

    app = Starlette(routes=[Route("/slow", slow, methods=["POST"])])
    async with served(app) as url:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            outcome = await _post_at_rate(session, url + "/slow", [b"{}"] * 10, 100.0, None, float("inf"))
    assert outcome.statuses == {"201": 10}
    latencies = sorted(outcome.latencies)
    assert latencies[0] >= 0.05
    assert latencies[-1] >= 10 * 0.05 - 9 * 0.01  # the last one was due at 90 ms, answered at ≥ 500 ms
