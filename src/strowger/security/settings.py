"""Security settings, from ``STROWGER_SECURITY_*`` environment variables (docs/security.md).

Kept apart from the platform :class:`~strowger.settings.Settings` so the
security model can be configured, tested and reasoned about on its own.
Complex values (``API_KEYS``, ``PUBLIC_PATHS``...) are given as JSON, e.g.
``STROWGER_SECURITY_API_KEYS='[{"name": "crm", "sha256": "…", "scopes": ["tmf622:write"]}]'``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from strowger.errors import ConfigError

Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ApiKeyEntry(BaseModel):
    """One API key as stored: its owner's name, the SHA-256 of the key (hex) and its scopes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The subject audited for this key's actions")
    sha256: str = Field(description="hex SHA-256 of the key; the key itself is never stored")
    scopes: tuple[str, ...] = ()

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256_HEX.match(value):
            raise ValueError("sha256 must be 64 hex digits (the SHA-256 of the key)")
        return value


class SecuritySettings(BaseSettings):
    """How API callers authenticate and what input the API accepts."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_SECURITY_", extra="forbid", frozen=True)

    # False answers every request as an anonymous admin: for local experiments only.
    enabled: bool = True

    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # HS* shared secret; at least 32 bytes so it cannot be brute-forced offline.
    jwt_secret: SecretStr | None = None
    # RS*/ES* verification keys: PEM text, or paths to PEM files.
    jwt_public_keys: tuple[str, ...] = ()
    # A JWKS document ({"keys": [...]}) on disk, e.g. synced from the IdP's jwks_uri.
    jwt_jwks_file: Path | None = None
    jwt_algorithms: tuple[Algorithm, ...] = ("RS256", "ES256", "HS256")
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300)

    # Create (once, under var/security) and print at start an admin API key: the embedded default's
    # way in. Production sets it false: keys and tokens come from its Secrets and identity provider,
    # and no admin credential is written to a pod's disk or logs.
    admin_key: bool = True

    api_keys: tuple[ApiKeyEntry, ...] = ()
    # Extra key entries in a JSON file (a list of entries); ensure_admin_credentials writes here.
    api_keys_file: Path | None = Path("var/security/api-keys.json")

    public_paths: tuple[str, ...] = ("/health", "/ready")

    max_body_bytes: int = Field(1_048_576, ge=1)
    max_array_length: int = Field(1_000, ge=1)
    max_string_length: int = Field(65_536, ge=1)
    max_json_depth: int = Field(32, ge=1)

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        return value

    @model_validator(mode="after")
    def _issuer_and_audience_with_keys(self) -> SecuritySettings:
        # A token from another issuer or for another service must never be accepted.
        if self.jwt_configured and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("jwt_issuer and jwt_audience are required when JWT keys are configured")
        return self

    @property
    def jwt_configured(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_keys or self.jwt_jwks_file)


def load_security_settings(**overrides: object) -> SecuritySettings:
    """SecuritySettings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return SecuritySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        raise ConfigError(f"STROWGER_SECURITY_{field.upper()}", error["msg"].lower()) from None
