"""`strowger bench hub` with a tiny workload: every side delivers every event (the shape, not the speed)."""

from __future__ import annotations

import pytest

from strowger.bench.hub import run_hub_bench

pytestmark = pytest.mark.integration


def test_every_side_delivers_every_event_to_the_listener() -> None:
    result = run_hub_bench("sqlite", 200, 20, 8, lambda description, fraction: None)

    for side in ("strowger", "floor", "http1_peer", "aiohttp_peer"):
        figures = result[side]
        assert figures["deliveries"] == 200, side
        assert figures["per_second"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"], side
    assert result["strowger"]["failed_attempts"] == 0
    # two plain loops, httpx peer (its sample is the whole workload here), Strowger, floor: 200 each.
    assert result["listener_requests"] == 5 * 200
