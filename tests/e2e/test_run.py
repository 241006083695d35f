"""`strowger run all` as `make run` starts it: one process, SQLite under ./var, Ctrl-C stops it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import STROWGER

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(base: str, process: subprocess.Popen[str], seconds: float = 30) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr.read() if process.stderr else ""
            pytest.fail(f"strowger exited early with {process.returncode}: {output}")
        try:
            return httpx.get(f"{base}/health", timeout=1)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("strowger did not answer /health in time")


def idle_connection_still_served(port: int, idle: float) -> bool:
    """Whether a keep-alive connection left idle for ``idle`` seconds still answers a request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
        time.sleep(idle)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def test_run_serves_health_on_sqlite_under_var_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "STROWGER_CONFIG": "/nonexistent.toml",
        "STROWGER_PORT": str(port),
        "STROWGER_HTTP_KEEP_ALIVE_SECONDS": "8",
    }
    env.pop("STROWGER_DATABASE_URL", None)
    env.pop("STROWGER_BUS_URL", None)
    process = subprocess.Popen(
        [STROWGER, "run", "all"], cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_until_healthy(base, process)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        ready = httpx.get(f"{base}/ready", timeout=5)
        assert ready.json() == {"status": "ready", "database": "sqlite", "bus": "embedded"}
        assert (tmp_path / "var" / "strowger.db").exists()
        assert idle_connection_still_served(port, idle=6.0)  # uvicorn's own default closes it at 5 s
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("strowger did not stop within 20s of Ctrl-C")
    output = process.stderr.read() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    assert process.returncode == 0, output
    assert "Traceback" not in output
