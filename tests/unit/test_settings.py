from __future__ import annotations

from pathlib import Path

import pytest

from strowger.errors import ConfigError
from strowger.settings import bus_kind, database_kind, load_section, load_settings, sqlite_path


def test_defaults_are_the_embedded_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STROWGER_DATABASE_URL", "STROWGER_BUS_URL", "STROWGER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STROWGER_CONFIG", "/nonexistent/strowger.toml")
    settings = load_settings()
    assert settings.database == "sqlite"
    assert settings.bus == "embedded"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///var/strowger.db", "sqlite"),
        ("sqlite:////tmp/strowger.db", "sqlite"),
        ("postgresql://strowger:secret@127.0.0.1:5432/strowger", "postgresql"),
        ("postgres://u@db.example/strowger", "postgresql"),
    ],
)
def test_database_urls_name_their_backend(url: str, kind: str) -> None:
    assert database_kind(url) == kind


@pytest.mark.parametrize(
    "url", ["", "mysql://x/y", "sqlite://", "postgresql://", "postgresql://host", "var/strowger.db"]
)
def test_malformed_database_urls_are_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        database_kind(url)
    assert raised.value.setting == "STROWGER_DATABASE_URL"
    assert "postgresql://" in str(raised.value) and "sqlite:///" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("embedded://", "embedded"),
        ("kafka://127.0.0.1:9092", "kafka"),
        ("kafka://a:9092,b:9092", "kafka"),
        ("amqp://guest:guest@127.0.0.1:5672/", "rabbitmq"),
        ("amqps://u:p@mq.example:5671/prod", "rabbitmq"),
    ],
)
def test_bus_urls_name_their_backend(url: str, kind: str) -> None:
    assert bus_kind(url) == kind


@pytest.mark.parametrize("url", ["", "kafka://", "amqp://", "redis://x", "nats://127.0.0.1"])
def test_malformed_bus_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="STROWGER_BUS_URL"):
        bus_kind(url)


def test_sqlite_paths_follow_the_three_and_four_slash_convention() -> None:
    assert sqlite_path("sqlite:///var/strowger.db") == Path("var/strowger.db")
    assert sqlite_path("sqlite:////tmp/strowger.db") == Path("/tmp/strowger.db")


def test_environment_overrides_and_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROWGER_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="STROWGER_PORT"):
        load_settings()
    monkeypatch.setenv("STROWGER_PORT", "9090")
    assert load_settings().port == 9090


def test_a_toml_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "strowger.toml"
    config.write_text('bus_url = "kafka://127.0.0.1:9092"\nport = 8181\n')
    monkeypatch.setenv("STROWGER_CONFIG", str(config))
    monkeypatch.delenv("STROWGER_BUS_URL", raising=False)
    monkeypatch.delenv("STROWGER_PORT", raising=False)
    settings = load_settings()
    assert (settings.bus, settings.port) == ("kafka", 8181)


def test_unknown_toml_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "strowger.toml"
    config.write_text('databse_url = "sqlite:///x.db"\n')
    monkeypatch.setenv("STROWGER_CONFIG", str(config))
    with pytest.raises(ConfigError, match="STROWGER_DATABSE_URL"):
        load_settings()


def test_an_unknown_component_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="STROWGER_COMPONENT") as raised:
        load_settings(component="bilin")
    assert "billing" in str(raised.value)


def test_a_component_section_names_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from strowger.components.activation.faults import ActivationSettings
    from strowger.components.service_ordering.settings import FulfilmentSettings

    monkeypatch.setenv("STROWGER_ACTIVATION_FAILURE_RATE", "7")
    with pytest.raises(ConfigError, match=r"STROWGER_ACTIVATION_FAILURE_RATE: expected .*less than"):
        load_section(ActivationSettings)
    monkeypatch.setenv("STROWGER_FULFILMENT_STEP_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ConfigError, match="STROWGER_FULFILMENT_STEP_TIMEOUT_SECONDS"):
        load_section(FulfilmentSettings)


def test_fulfilment_settings_reach_the_saga_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from strowger.components.service_ordering.saga import ALLOCATE, FulfilmentTimings, fulfilment_saga
    from strowger.components.service_ordering.settings import FulfilmentSettings

    assert FulfilmentSettings().timings() == FulfilmentTimings()  # the defaults are the same
    monkeypatch.setenv("STROWGER_FULFILMENT_STEP_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("STROWGER_FULFILMENT_COMPENSATION_ATTEMPTS", "8")
    saga = fulfilment_saga(load_section(FulfilmentSettings).timings())
    allocate = next(step for step in saga.steps if step.name == ALLOCATE)
    assert allocate.action.timeout == timedelta(seconds=600)
    assert allocate.compensation is not None and allocate.compensation.retry.max_attempts == 8


@pytest.mark.parametrize(
    "variable",
    [
        "STROWGER_FULFILMENT_ACTION_ATTEMPTS",  # a component's section, read by bootstrap
        "STROWGER_SECURITY_MAX_BODY_BYTES",  # the security section, read by the run command
        "STROWGER_HUB_DIRECT_BUDGET",  # the platform's own settings
    ],
)
def test_a_bad_component_setting_stops_the_run_command_in_one_line(variable: str) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", variable: "0", "STROWGER_LOG_JSON": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "strowger.cli", "run", "service-ordering", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"configuration error: {variable}" in done.stderr
    assert "Traceback" not in done.stderr
