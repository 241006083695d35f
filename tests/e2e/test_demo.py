"""``strowger demo`` as a user runs it: a real process, the platform in process behind real HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.e2e

STROWGER = shutil.which("strowger") or str(Path(sys.executable).parent / "strowger")
ORDERS = 20


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STROWGER_CONFIG": "/nonexistent.toml", "COLUMNS": "200"}
    return subprocess.run(
        [STROWGER, "demo", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180
    )


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("demo")
    result = run_demo(tmp_path, "--orders", str(ORDERS), "--failure-rate", "0.2", "--seed", "7", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return result, orjson.loads(result.stdout.strip().splitlines()[-1])


def test_every_order_ends_terminal_and_the_failures_are_compensated(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, summary = demo_run
    assert summary["orders"] == ORDERS
    assert summary["completed"] + summary["failed"] + summary["quarantined"] == ORDERS
    assert summary["refused"] == 0
    assert summary["completed"] > 0  # at 20 % failures, 20 orders all failing is ~1e-14
    assert summary["duration_ms"]["p50"] is not None
    assert summary["duration_ms"]["p50"] <= summary["duration_ms"]["p99"]
    assert summary["events_published"] > ORDERS
    # every failed order says why (the note COM writes), and the injected fault is the reason
    assert sum(summary["failed_because"].values()) == summary["failed"]
    assert "(no reason recorded)" not in summary["failed_because"]


def test_the_invariants_hold_and_are_printed(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, summary = demo_run
    assert summary["ok"] is True
    assert [invariant["ok"] for invariant in summary["invariants"]] == [True, True, True]
    charges_minus_credits = float(summary["charges_eur"]) - float(summary["credits_eur"])
    assert charges_minus_credits > 0
    for label in ("completed", "failed and compensated", "quarantined", "p95", "events published", "charges"):
        assert label in result.stdout
    assert "no resource leaked" in result.stdout


def test_a_bad_backend_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--backend", "oracle", "--orders", "1")
    assert result.returncode == 2
    assert "expected one of embedded, postgres+kafka" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_writes_a_screenshot_of_the_dashboard_mid_run(tmp_path: Path) -> None:
    shot = tmp_path / "shots" / "dashboard.png"
    result = run_demo(
        tmp_path, "--orders", "12", "--failure-rate", "0.2", "--seed", "7", "--screenshot", str(shot)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (1366, 768)  # a laptop screen
    assert f"dashboard screenshot written to {shot}" in " ".join(result.stdout.split())
