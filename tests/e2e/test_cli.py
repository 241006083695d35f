"""The ``strowger`` command as a user runs it (a real process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

STROWGER = shutil.which("strowger") or str(Path(sys.executable).parent / "strowger")


def strowger(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STROWGER_CONFIG": "/nonexistent.toml", **(env or {})}
    return subprocess.run(
        [STROWGER, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60
    )


def test_help_lists_the_commands() -> None:
    result = strowger("--help")
    assert result.returncode == 0
    for command in ("run", "config", "version"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STROWGER_DATABASE_URL", "mysql://nope"),
        ("STROWGER_BUS_URL", "nats://x"),
        ("STROWGER_PORT", "eighty"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(variable: str, value: str) -> None:
    result = strowger("run", env={variable: value})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
