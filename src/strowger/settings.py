"""One settings object for the whole platform.

Values come from ``STROWGER_*`` environment variables, then an optional
``strowger.toml`` (path in ``STROWGER_CONFIG``), then the defaults below: the
embedded platform on SQLite under ``./var``. Backends are chosen by URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from strowger.errors import ConfigError

SectionT = TypeVar("SectionT", bound=BaseSettings)
DatabaseKind = Literal["sqlite", "postgresql"]
BusKind = Literal["embedded", "kafka", "rabbitmq"]

_DATABASE_FORM = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BUS_FORM = "embedded://, kafka://HOST:PORT[,HOST:PORT] or amqp://USER:PASSWORD@HOST:PORT/VHOST"


def database_kind(url: str) -> DatabaseKind:
    """The database backend a URL names, or ConfigError."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.path not in ("", "/"):
        return "sqlite"
    if parts.scheme in ("postgresql", "postgres") and parts.hostname and parts.path.strip("/"):
        return "postgresql"
    raise ConfigError("STROWGER_DATABASE_URL", _DATABASE_FORM, url)


def bus_kind(url: str) -> BusKind:
    """The bus backend a URL names, or ConfigError."""
    parts = urlsplit(url)
    if parts.scheme == "embedded":
        return "embedded"
    if parts.scheme == "kafka" and parts.netloc:
        return "kafka"
    if parts.scheme in ("amqp", "amqps") and parts.hostname:
        return "rabbitmq"
    raise ConfigError("STROWGER_BUS_URL", _BUS_FORM, url)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: safe for error messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable URL: show nothing of its credentials
        return url.rpartition("@")[2] if "@" in url else url
    if not password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL points to."""
    # sqlite:///var/x.db has path "/var/x.db" (relative: three slashes);
    # sqlite:////tmp/x.db has path "//tmp/x.db" (absolute: four slashes).
    return Path(urlsplit(url).path[1:])


class Settings(BaseSettings):
    """Platform settings; see docs/architecture.md for every field."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_", extra="forbid", frozen=True)

    database_url: str = "sqlite:///var/strowger.db"
    bus_url: str = "embedded://"
    # PostgreSQL schema the platform's tables live in (search_path); empty: the role's default.
    database_schema: str = Field("", pattern=r"^$|^[a-z_][a-z0-9_]{0,62}$")
    # A split cluster (docs/operations.md, "Database layout"): every component's schema by component
    # name (JSON); this process's own is ``database_schema``. Empty: one schema for everything.
    database_schemas: dict[str, str] = Field(default_factory=dict)
    # Prefix of every topic and consumer-group name on a shared broker (tests, tenants, staging).
    bus_namespace: str = Field("", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Seconds an idle keep-alive connection stays open. Longer than any client's or proxy's own idle
    # timeout (httpx 5 s, aiohttp 15 s, a cloud load balancer 60 s): a server that closes first races
    # the client's next request on that connection, which fails with no response (seen as ReadError
    # on a few POSTs under load with uvicorn's 5 s, equal to httpx's).
    http_keep_alive_seconds: int = Field(65, ge=1, le=3600)
    component: str = "all"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    # Retry backoff of a failing handler, in seconds; then the dead-letter queue.
    retry_backoff: tuple[float, ...] = (1.0, 5.0, 30.0)
    outbox_poll_interval: float = Field(0.5, gt=0)
    retention_days: float = Field(7.0, gt=0)
    # Load the sample telco catalog (fibre, mobile, static IP, bundle) at start when missing.
    sample_catalog: bool = True
    # Webhook callbacks to these networks are allowed despite the SSRF guard.
    hub_allowed_networks: tuple[str, ...] = ()
    # Hub webhooks POSTed straight from the fan-out, only failures queued (docs/tmf-apis.md,
    # "Hub delivery"); false: every delivery goes through the queue (no duplicate from a
    # commit that fails after a 2xx, at the cost of a queued row per delivery).
    hub_direct_delivery: bool = True
    # Seconds a batch's direct POSTs may take before the rest is queued.
    hub_direct_budget: float = Field(2.0, gt=0, le=60)
    # SQLite, one process: the least share of the event loop the consumers and projections keep
    # while HTTP requests keep it busy (requests come first; bus/pacing.py).
    background_share: float = Field(0.1, gt=0, le=1)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        database_kind(value)
        return value

    @field_validator("database_schemas")
    @classmethod
    def _database_schemas(cls, value: dict[str, str]) -> dict[str, str]:
        for schema in value.values():
            if not _SCHEMA_NAME.fullmatch(schema):
                raise ConfigError("STROWGER_DATABASE_SCHEMAS", "schema names like cluster_x_billing", schema)
        return value

    @field_validator("component")
    @classmethod
    def _component(cls, value: str) -> str:
        from strowger.components.registry import parse_component  # the catalogue knows the names

        parse_component(value)
        return value

    @field_validator("bus_url")
    @classmethod
    def _bus_url(cls, value: str) -> str:
        bus_kind(value)
        return value

    @property
    def database(self) -> DatabaseKind:
        return database_kind(self.database_url)

    @property
    def bus(self) -> BusKind:
        return bus_kind(self.bus_url)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("STROWGER_CONFIG", "strowger.toml")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and strowger.toml; a bad value raises ConfigError naming it."""
    return load_section(Settings, **overrides)


def load_section(section: type[SectionT], **overrides: Any) -> SectionT:
    """One settings class (``Settings``, or a component's with its own ``STROWGER_<NAME>_`` prefix).

    A bad value raises ConfigError naming the variable, so every command reports it in one
    line (``strowger: configuration error: …``) instead of a pydantic trace.
    """
    try:
        return section(**overrides)
    except ConfigError:
        raise
    except ValidationError as exc:
        raise config_error(exc, str(section.model_config.get("env_prefix", ""))) from None


def config_error(exc: ValidationError, prefix: str) -> ConfigError:
    """The first error of ``exc`` as a ConfigError naming the environment variable."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "settings"
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    return ConfigError(f"{prefix}{field.upper()}", error["msg"].lower(), error.get("input"))
