"""``strowger alerts rules``: the Prometheus rules file, printed or written, with its thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from strowger.cli import app
from strowger.ops.alerts import AlertSettings, default_rules


def test_the_rules_file_has_every_built_in_rule() -> None:
    result = CliRunner().invoke(app, ["alerts", "rules"])
    assert result.exit_code == 0, result.output
    for rule in default_rules(AlertSettings()):
        assert f"- alert: {rule.name}" in result.stdout


def test_the_rules_file_is_written_with_the_configured_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROWGER_ALERTS_OUTBOX_MAX_AGE_SECONDS", "90")
    out = tmp_path / "strowger-rules.yml"
    result = CliRunner().invoke(app, ["alerts", "rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max(strowger_outbox_oldest_age_seconds) > 90" in out.read_text()


def test_a_bad_threshold_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROWGER_ALERTS_COMPENSATION_RATE", "7")
    result = CliRunner().invoke(app, ["alerts", "rules"])
    assert result.exit_code == 2
    assert "configuration error: STROWGER_ALERTS_COMPENSATION_RATE" in result.output
    assert "less than" in result.output and "Traceback" not in result.output
