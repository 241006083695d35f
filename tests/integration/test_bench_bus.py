"""`strowger bench bus` on the embedded backend with a tiny workload: the result's shape, not its speed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from strowger.bench import bus as bench_bus
from strowger.bench.cli import bench_app

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def short_paced_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_bus, "PACED_EVENTS", 50)
    monkeypatch.setattr(bench_bus, "RELAY_PACED_SECONDS", 0.2)


def _check_shape(result: dict[str, Any], *, events: int, db: str) -> None:
    assert result["benchmark"] == "bus"
    assert (result["backend"], result["db"], result["events"]) == ("embedded", db, events)
    ours = result["strowger"]
    for figure in ("consume_per_s", "relay_per_s", "fill_publish_per_s"):
        assert ours[figure] > 0, figure
    assert 0 < ours["latency_p50_ms"] <= ours["latency_p99_ms"]
    assert 0 < ours["relay_latency_p50_ms"] <= ours["relay_latency_p99_ms"]
    assert ours["relay_paced_rate_reached"] > 0
    assert ours["message_bytes"] > 100
    peer = result["peer"]
    assert peer["missing"] is None
    assert peer["consume_per_s"] > 0
    # The ratio is of the unrounded rates; the figures beside it are rounded to 0.01/s.
    assert result["ratio"]["consume"] == pytest.approx(
        ours["consume_per_s"] / peer["consume_per_s"], abs=0.002
    )
    assert set(result["meets"]) == {"consume_ratio", "relay_per_s", "relay_latency_p99"}
    assert result["machine"]["cpus"] >= 1


async def test_embedded_on_sqlite_gives_every_figure_beside_the_peer() -> None:
    result = await bench_bus.bus_bench("embedded", 300, "sqlite")

    _check_shape(result, events=300, db="sqlite")
    assert result["peer"]["client"] == "sqlite3 read loop"
    assert result["meets"]["relay_per_s"] is None  # the relay target is for PostgreSQL only
    floor = result["floor"]  # the hand-written consume loop read the same 300 rows
    assert floor["consume_per_s"] > 0 and "relay_per_s" not in floor
    assert result["ratio"]["consume_to_floor"] == pytest.approx(  # ratio of unrounded rates
        result["strowger"]["consume_per_s"] / floor["consume_per_s"], abs=0.002
    )


async def test_embedded_on_postgres_reads_the_peer_with_psycopg(postgres_url: str) -> None:
    result = await bench_bus.bus_bench("embedded", 300, "postgres")

    _check_shape(result, events=300, db="postgres")
    assert result["peer"]["client"] == "psycopg read loop"
    assert isinstance(result["meets"]["relay_per_s"], bool)
    assert "missing" in result["floor"]  # no hand-written floor for this pair: said, not made up


async def test_kafka_on_postgres_runs_both_hand_written_floors(postgres_url: str, kafka_url: str) -> None:
    result = await bench_bus.bus_bench("kafka", 300, "postgres")

    floor, ratio = result["floor"], result["ratio"]
    assert floor["consume_per_s"] > 0 and floor["relay_per_s"] > 0
    assert ratio["relay_to_floor"] == pytest.approx(
        result["strowger"]["relay_per_s"] / floor["relay_per_s"], abs=0.002
    )
    assert ratio["floor_consume_to_peer"] > 0


async def test_unknown_backend_or_database_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        await bench_bus.bus_bench("zeromq", 100, "sqlite")
    with pytest.raises(ValueError, match="db"):
        await bench_bus.bus_bench("embedded", 100, "oracle")


def test_cli_prints_the_table_then_the_json_line_last() -> None:
    outcome = CliRunner().invoke(bench_app, ["bus", "--backend", "embedded", "--events", "200", "--json"])

    assert outcome.exit_code == 0, outcome.output
    lines = outcome.stdout.strip().splitlines()
    assert "Event bus" in outcome.stdout
    result = orjson.loads(lines[-1])
    assert result["backend"] == "embedded"
    assert result["events"] == 200
    assert result["strowger"]["consume_per_s"] > 0


def test_cli_refuses_an_unknown_backend() -> None:
    outcome = CliRunner().invoke(bench_app, ["bus", "--backend", "zeromq"])

    assert outcome.exit_code != 0
    assert "--backend" in outcome.output
