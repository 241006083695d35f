"""`strowger chaos` at the reduced (CI) size, end to end: every scenario runs and every invariant passes.

The real command in a subprocess, as CI and an operator run it: a private PostgreSQL and
Kafka (``scripts/services`` instance ``chaos``, so restarting them disturbs no other test),
a multi-process cluster on them, every scenario of the reduced size (kill -9, PostgreSQL
restart, failing webhook listener, poison, forced redelivery, every group rewound to offset
0, and mixed: kills + poison + a Kafka outage + the failing listener), and the report's JSON
line. Then a cluster on RabbitMQ whose private broker is restarted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
NOT_ON_KAFKA = {"rabbitmq"}  # needs the RabbitMQ bus; this run is on Kafka


def run_chaos(directory: Path, *arguments: str) -> tuple[int, dict[str, object], str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("STROWGER_")}
    completed = subprocess.run(
        [sys.executable, "-m", "strowger.cli", "chaos", "--dir", str(directory), "--json", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    assert lines, completed.stderr[-3000:]
    return completed.returncode, orjson.loads(lines[-1]), completed.stdout + completed.stderr[-3000:]


def test_every_scenario_keeps_every_invariant(tmp_path: Path, postgres_url: str, kafka_url: str) -> None:
    code, report, output = run_chaos(tmp_path / "chaos", "--seed", "8")

    scenarios = {str(s["scenario"]): s for s in report["scenarios"]}  # type: ignore[union-attr]
    ran = {name for name, scenario in scenarios.items() if not scenario["skipped"]}
    expected = {"baseline", "kill", "postgres", "webhook", "poison", "duplicate", "rewind", "mixed"}
    assert ran == expected, output
    assert {name for name, s in scenarios.items() if s["skipped"]} == NOT_ON_KAFKA, output
    for name in ran:
        scenario = scenarios[name]
        assert scenario["orders"], output
        failed = [i for i in scenario["invariants"] if i["ok"] is not True]  # type: ignore[index]
        assert not failed, f"{name}: {failed}\n{output}"
        assert len(scenario["invariants"]) >= 7, output  # type: ignore[arg-type]
    assert scenarios["kill"]["injected"], output  # the faults really happened
    assert scenarios["poison"]["injected"] == {"poison messages": 1}, output
    assert scenarios["postgres"]["injected"] == {"postgresql restarted": 1}, output
    assert scenarios["duplicate"]["injected"]["events copied"] > 0, output  # type: ignore[index]
    assert scenarios["rewind"]["injected"]["groups rewound"] > 5, output  # type: ignore[index]
    mixed = scenarios["mixed"]["injected"]
    assert {"kafka stopped", "poison messages", "listener failing (s)"} <= set(mixed), output  # type: ignore[arg-type]
    assert report["ok"] is True and code == 0, output


def test_a_cluster_on_rabbitmq_survives_a_broker_restart(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str
) -> None:
    """The cluster on the RabbitMQ bus; its PRIVATE RabbitMQ node (``chaos@localhost``) stopped, started."""
    arguments = ("--bus", "rabbitmq", "--scenario", "rabbitmq", "--seed", "8")
    code, report, output = run_chaos(tmp_path / "chaos", *arguments)

    [scenario] = report["scenarios"]  # type: ignore[misc]
    assert (scenario["scenario"], scenario["skipped"]) == ("rabbitmq", ""), output
    assert scenario["injected"] == {"rabbitmq stopped": 1}, output
    assert scenario["orders"], output
    failed = [i for i in scenario["invariants"] if i["ok"] is not True]
    assert not failed and len(scenario["invariants"]) >= 7, f"{failed}\n{output}"
    assert report["ok"] is True and code == 0, output
