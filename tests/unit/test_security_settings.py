"""SecuritySettings come from STROWGER_SECURITY_* variables; bad values name the variable."""

from __future__ import annotations

import pytest

from strowger.errors import ConfigError
from strowger.security.auth import hash_api_key
from strowger.security.settings import SecuritySettings, load_security_settings


def test_defaults_are_secure() -> None:
    settings = SecuritySettings()

    assert settings.enabled is True
    assert settings.public_paths == ("/health", "/ready")
    assert not settings.jwt_configured
    assert 0 < settings.jwt_leeway_seconds <= 60


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hash_api_key("stw_abc")
    monkeypatch.setenv("STROWGER_SECURITY_JWT_ISSUER", "https://idp")
    monkeypatch.setenv("STROWGER_SECURITY_JWT_AUDIENCE", "strowger")
    monkeypatch.setenv("STROWGER_SECURITY_JWT_SECRET", "z" * 32)
    monkeypatch.setenv("STROWGER_SECURITY_JWT_LEEWAY_SECONDS", "5")
    monkeypatch.setenv(
        "STROWGER_SECURITY_API_KEYS", f'[{{"name": "crm", "sha256": "{digest}", "scopes": ["tmf622:write"]}}]'
    )
    monkeypatch.setenv("STROWGER_SECURITY_MAX_BODY_BYTES", "2048")

    settings = load_security_settings()

    assert settings.jwt_configured
    assert settings.jwt_leeway_seconds == 5
    assert settings.api_keys[0].name == "crm" and settings.api_keys[0].scopes == ("tmf622:write",)
    assert settings.max_body_bytes == 2048
    assert "zzzz" not in repr(settings)  # the secret never shows in a repr or a log line


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STROWGER_SECURITY_JWT_LEEWAY_SECONDS", "3600"), ("STROWGER_SECURITY_MAX_BODY_BYTES", "0")],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=variable):
        load_security_settings()
