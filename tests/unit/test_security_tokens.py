"""Bearer JWT validation: every way a token can be wrong is refused with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from strowger.errors import ConfigError
from strowger.security.auth import Authenticator, JwtVerifier, Unauthenticated, scopes_of
from strowger.security.settings import SecuritySettings

ISSUER = "https://idp.example.net/realms/bss"
AUDIENCE = "strowger"
SECRET = "s" * 40

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "iat": now,
        "scope": "tmf622:read",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def settings(**changes: Any) -> SecuritySettings:
    values: dict[str, Any] = {
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_secret": SECRET,
        "jwt_public_keys": (public_pem(RSA_KEY), public_pem(EC_KEY)),
        "jwt_leeway_seconds": 5,
        "api_keys_file": None,
    }
    values.update(changes)
    return SecuritySettings(**values)


@pytest.fixture(scope="module")
def verifier() -> JwtVerifier:
    return JwtVerifier(settings())


@pytest.mark.parametrize(
    ("key", "algorithm"), [(SECRET, "HS256"), (RSA_KEY, "RS256"), (EC_KEY, "ES256")], ids=["hs", "rs", "es"]
)
def test_a_valid_token_gives_its_subject_and_scopes(verifier: JwtVerifier, key: Any, algorithm: str) -> None:
    token = jwt.encode(claims(scope="tmf622:read tmf620:write"), key, algorithm=algorithm)

    principal = verifier.principal(token)

    assert principal.subject == "alice"
    assert principal.scopes == {"tmf622:read", "tmf620:write"}
    assert principal.method == "jwt"


@dataclass(frozen=True)
class Relative:
    """A claim time given as seconds from when the test runs."""

    seconds: int


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": Relative(-60)}, "expired"),
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"aud": "another-service"}, "aud"),
        ({"exp": None}, "'exp'"),
        ({"aud": None}, "'aud'"),
        ({"iss": None}, "'iss'"),
        ({"sub": None}, "subject"),
        ({"nbf": Relative(600)}, "not valid yet"),
    ],
    ids=["expired", "wrong-issuer", "wrong-audience", "no-exp", "no-aud", "no-iss", "no-sub", "not-yet"],
)
def test_a_token_with_wrong_claims_is_refused(
    verifier: JwtVerifier, changes: dict[str, Any], reason: str
) -> None:
    now = int(time.time())  # at run time: a time taken at collection goes stale in a long suite
    resolved = {k: now + v.seconds if isinstance(v, Relative) else v for k, v in changes.items()}
    token = jwt.encode(claims(**resolved), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated, match=reason):
        verifier.principal(token)


def test_expiry_within_the_leeway_is_tolerated(verifier: JwtVerifier) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 2), SECRET, algorithm="HS256")

    assert verifier.principal(token).subject == "alice"


def test_a_token_signed_by_another_key_is_refused(verifier: JwtVerifier) -> None:
    forged = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256")
    wrong_secret = jwt.encode(claims(), "x" * 40, algorithm="HS256")

    for token in (forged, wrong_secret):
        with pytest.raises(Unauthenticated, match="signature"):
            verifier.principal(token)


def test_a_tampered_payload_is_refused(verifier: JwtVerifier) -> None:
    header, _, signature = jwt.encode(claims(), RSA_KEY, algorithm="RS256").split(".")
    payload = _b64(orjson.dumps(claims(scope="admin")))

    with pytest.raises(Unauthenticated, match="signature"):
        verifier.principal(f"{header}.{payload}.{signature}")


def test_the_none_algorithm_is_refused(verifier: JwtVerifier) -> None:
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    unsigned = f"{header}.{_b64(orjson.dumps(claims(scope='admin')))}."

    with pytest.raises(Unauthenticated, match="'none'"):
        verifier.principal(unsigned)


def test_an_rsa_public_key_cannot_be_used_as_an_hmac_secret() -> None:
    # The classic key-confusion forgery: sign HS256 with the (public) RSA key as the secret.
    only_rsa = JwtVerifier(settings(jwt_secret=None, jwt_public_keys=(public_pem(RSA_KEY),)))
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = _b64(orjson.dumps(claims(scope="admin")))
    mac = hmac.new(public_pem(RSA_KEY).encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()

    with pytest.raises(Unauthenticated, match="HS256"):
        only_rsa.principal(f"{header}.{payload}.{_b64(mac)}")


def test_an_algorithm_outside_the_allowed_list_is_refused() -> None:
    rs_only = JwtVerifier(settings(jwt_algorithms=("RS256",)))

    with pytest.raises(Unauthenticated, match="HS256"):
        rs_only.principal(jwt.encode(claims(), SECRET, algorithm="HS256"))


def test_garbage_is_not_a_token(verifier: JwtVerifier) -> None:
    with pytest.raises(Unauthenticated, match="not a JWT"):
        verifier.principal("not-a-token")


def test_keys_from_a_jwks_document_are_chosen_by_kid(tmp_path: Any) -> None:
    jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    other = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**jwk, "kid": "k1"}, {**other, "kid": "k2"}]}))
    verifier = JwtVerifier(settings(jwt_secret=None, jwt_public_keys=(), jwt_jwks_file=jwks))

    good = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256", headers={"kid": "k2"})
    mislabelled = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k9"})

    assert verifier.principal(good).subject == "alice"
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.principal(mislabelled)
    with pytest.raises(Unauthenticated, match="kid"):
        verifier.principal(unknown)


def test_scopes_are_read_from_scope_or_scp() -> None:
    assert scopes_of({"scope": "a b"}) == {"a", "b"}
    assert scopes_of({"scp": ["a", "c"]}) == {"a", "c"}
    assert scopes_of({"scope": 3}) == frozenset()


def test_jwt_keys_without_issuer_and_audience_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="jwt_issuer and jwt_audience"):
        SecuritySettings(jwt_secret=SECRET, api_keys_file=None)


def test_a_short_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecuritySettings(jwt_secret="short", jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


def test_an_unreadable_public_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEYS"):
        JwtVerifier(settings(jwt_public_keys=("/nonexistent/key.pem",)))


def test_the_authenticator_requires_the_bearer_scheme() -> None:
    authenticator = Authenticator(settings())
    token = jwt.encode(claims(), SECRET, algorithm="HS256")

    assert authenticator.authenticate({"authorization": f"Bearer {token}"}).subject == "alice"
    with pytest.raises(Unauthenticated, match="Bearer <token>"):
        authenticator.authenticate({"authorization": f"Token {token}"})
    with pytest.raises(Unauthenticated, match="required"):
        authenticator.authenticate({})


def test_bearer_tokens_are_refused_when_no_jwt_key_is_configured() -> None:
    authenticator = Authenticator(SecuritySettings(api_keys_file=None))
    token = jwt.encode(claims(), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated, match="not accepted"):
        authenticator.authenticate({"authorization": f"Bearer {token}"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
