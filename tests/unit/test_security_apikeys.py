"""API keys are stored as SHA-256 hashes and looked up in constant time."""

from __future__ import annotations

import hashlib

import pytest

from strowger.security.auth import (
    ApiKeyStore,
    Authenticator,
    Unauthenticated,
    generate_api_key,
    hash_api_key,
)
from strowger.security.settings import ApiKeyEntry, SecuritySettings


def test_the_hash_is_the_hex_sha256_of_the_key() -> None:
    assert hash_api_key("stw_example") == hashlib.sha256(b"stw_example").hexdigest()


def test_generated_keys_are_prefixed_random_and_long() -> None:
    keys = {generate_api_key() for _ in range(50)}

    assert len(keys) == 50
    assert all(key.startswith("stw_") and len(key) >= 40 for key in keys)


def test_a_known_key_authenticates_as_its_owner() -> None:
    key = generate_api_key()
    store = ApiKeyStore(
        [
            ApiKeyEntry(name="billing", sha256=hash_api_key(generate_api_key()), scopes=("tmf678:read",)),
            ApiKeyEntry(name="crm", sha256=hash_api_key(key), scopes=("tmf622:write", "tmf620:read")),
        ]
    )

    principal = store.principal(key)

    assert principal.subject == "apikey:crm"
    assert principal.scopes == {"tmf622:write", "tmf620:read"}
    assert principal.method == "api-key"


def test_an_unknown_key_or_the_hash_itself_is_refused() -> None:
    key = generate_api_key()
    store = ApiKeyStore([ApiKeyEntry(name="crm", sha256=hash_api_key(key))])

    for wrong in (generate_api_key(), hash_api_key(key), key[:-1], ""):
        with pytest.raises(Unauthenticated, match="not valid"):
            store.principal(wrong)


def test_a_stored_hash_must_be_a_sha256_hex_digest() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        ApiKeyEntry(name="crm", sha256="stw_the-key-itself-by-mistake")


def test_the_x_api_key_header_authenticates() -> None:
    key = generate_api_key()
    settings = SecuritySettings(
        api_keys=(ApiKeyEntry(name="ops", sha256=hash_api_key(key), scopes=("operator",)),),
        api_keys_file=None,
    )

    principal = Authenticator(settings).authenticate({"x-api-key": key})

    assert principal.subject == "apikey:ops"


def test_with_authentication_disabled_everyone_is_an_anonymous_admin() -> None:
    principal = Authenticator(SecuritySettings(enabled=False, api_keys_file=None)).authenticate({})

    assert principal.subject == "anonymous"
    assert principal.scopes == {"admin"}
