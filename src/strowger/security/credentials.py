"""The embedded default's admin credential: an API key created on first start and printed at each.

The key itself is kept in ``<data_dir>/security/admin-api-key`` (mode 0600) so
the operator can read it again, like the admin password of other "standalone"
modes; the server only ever loads its SHA-256 from the API keys file. A real
deployment configures its own keys or an identity provider and removes both.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from strowger.errors import ConfigError
from strowger.security.auth import generate_api_key, hash_api_key, read_api_keys_file
from strowger.security.settings import ApiKeyEntry, SecuritySettings

ADMIN_KEY_NAME = "admin"


def ensure_admin_credentials(settings: SecuritySettings, data_dir: Path | str) -> str:
    """The admin API key, created under ``data_dir`` on first call and registered by hash.

    Idempotent: later calls return the same key. The hash goes to
    ``settings.api_keys_file`` (the file the server reads keys from). Returns
    "" when authentication is disabled (there is nothing to print) or the admin key is turned off
    (``STROWGER_SECURITY_ADMIN_KEY=false``: nothing is written either).
    """
    if not settings.enabled or not settings.admin_key:
        return ""
    if settings.api_keys_file is None:
        raise ConfigError("STROWGER_SECURITY_API_KEYS_FILE", "a file to register the admin key in")
    key_file = Path(data_dir) / "security" / "admin-api-key"
    key = _read_key(key_file) or _create_key(key_file)
    _register(
        settings.api_keys_file, ApiKeyEntry(name=ADMIN_KEY_NAME, sha256=hash_api_key(key), scopes=("admin",))
    )
    return key


def _read_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _create_key(path: Path) -> str:
    key = generate_api_key()
    _write_private(path, key + "\n")
    return key


def _register(keys_file: Path, entry: ApiKeyEntry) -> None:
    entries = read_api_keys_file(keys_file) if keys_file.exists() else []
    if entry in entries:
        return
    kept = [existing for existing in entries if existing.name != entry.name]
    document = [item.model_dump() for item in [*kept, entry]]
    _write_private(keys_file, orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
