"""``strowger verify sagas`` as CI runs it: a real process, the whole fault matrix, exit code 0.

Until the lead mounts ``verify`` on the ``strowger`` command, the sub-app runs as
``python -m strowger.commands.verify``; both are the same typer app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strowger.components.service_ordering.saga import fulfilment_saga
from strowger.verify.matrix import Injection, Point, injections, plan

pytestmark = pytest.mark.e2e


def verify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STROWGER_CONFIG": "/nonexistent.toml", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "strowger.commands.verify", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=240,
    )


def test_every_injection_point_is_derived_from_the_saga_definition() -> None:
    definition = fulfilment_saga()
    labels = [point.label for point in injections(definition, ["PO-X"])]
    assert labels == [
        "happy (PO-X)",
        "allocate: action fails",
        "allocate: action times out",
        "activate: action fails",
        "activate: action times out",
        "recordInventory: action fails",
        "recordInventory: action times out",
        "allocate: compensation fails",
        "activate: compensation fails",
        "recordInventory: compensation fails",
    ]
    # A compensation of the last step is reached by timing that step out (uncertain → undone).
    last = plan(definition, Injection(Point.COMPENSATION_FAILS, "recordInventory"), attempts=2)
    assert last.faults == [("RecordInventory", "drop", 2)]
    assert last.compensation_fault == "RemoveInventory"
    assert set(last.expected_steps.values()) == {"compensated"}


def test_the_fault_matrix_runs_and_every_invariant_holds(tmp_path: Path) -> None:
    result = verify("sagas", cwd=tmp_path)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "Saga fault matrix" in output
    for label in ("happy (PO-FIBRE-500)", "allocate: action fails", "activate: action times out"):
        assert label in output
    assert output.count("serviceOrderFulfilment") == 12  # 3 happy paths, 6 action faults, 3 compensations
    assert output.count("quarantined") >= 3  # each compensation fault went through quarantine
    assert "FAIL" not in output
    assert "12 scenarios" in output and "all invariants hold" in output
    assert not list(tmp_path.rglob("*.db*")), "the throwaway database was left behind"
