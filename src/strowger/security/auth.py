"""Who is calling: OAuth2 bearer JWTs and API keys turned into a :class:`Principal`.

* JWT (``Authorization: Bearer <token>``): signature, ``exp``, ``iss`` and ``aud``
  are always checked, within a small leeway. Only the algorithms configured
  AND matching a configured key are accepted, so ``alg: none`` and the
  RS256-to-HS256 key-confusion trick are refused. Scopes come from the
  ``scope`` claim (space separated, RFC 8693) or ``scp`` (a list).
* API key (``X-API-Key: <key>``): only the SHA-256 of each key is stored and
  compared in constant time. A key is a high-entropy random string, so a fast
  hash is enough (no salt or slow hash needed as for passwords).

Every failure raises :class:`Unauthenticated` with a message safe to return.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
import orjson

from strowger.errors import ConfigError
from strowger.security.settings import ApiKeyEntry, SecuritySettings
from strowger.tmf.errors import ApiError

log = logging.getLogger("strowger.security")

API_KEY_HEADER = "x-api-key"
API_KEY_PREFIX = "stw_"


class Unauthenticated(ApiError):
    """No credential, or one that is not valid: HTTP 401 with ``WWW-Authenticate: Bearer``."""

    status = 401
    code = "unauthenticated"
    reason = "Missing or invalid credentials"


class MissingCredentials(Unauthenticated):
    """No credential at all (RFC 6750: the challenge then carries no error code)."""

    def __init__(self) -> None:
        super().__init__("Credentials are required: a bearer token or an X-API-Key header")


class Forbidden(ApiError):
    """A valid credential without the scope the request needs: HTTP 403."""

    status = 403
    code = "forbidden"
    reason = "Insufficient scope"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who (audited as ``subject``), how, and what they may do."""

    subject: str
    scopes: frozenset[str]
    method: str  # "jwt", "api-key" or "anonymous" (authentication disabled)
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# --- API keys ---------------------------------------------------------------------------------


def generate_api_key() -> str:
    """A new random API key (256 bits), prefixed so secret scanners and log redaction spot it."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of ``key``: what is stored instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """The known API keys, by hash only."""

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        self.entries: tuple[ApiKeyEntry, ...] = tuple(entries)
        # Each key's principal, made once: it is immutable (claims included), and every request
        # presenting the key is that caller.
        self._principals = [
            (
                entry.sha256.encode(),
                Principal(
                    subject=f"apikey:{entry.name}",
                    scopes=frozenset(entry.scopes),
                    method="api-key",
                    claims=MappingProxyType({}),
                ),
            )
            for entry in self.entries
        ]

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> ApiKeyStore:
        entries = list(settings.api_keys)
        if settings.api_keys_file is not None and settings.api_keys_file.exists():
            entries.extend(read_api_keys_file(settings.api_keys_file))
        return cls(entries)

    def principal(self, key: str) -> Principal:
        """The owner of ``key``, or Unauthenticated."""
        presented = hash_api_key(key).encode()
        found: Principal | None = None
        # Compare against every entry so the time taken does not say which one matched.
        for digest, principal in self._principals:
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise Unauthenticated("The API key is not valid")
        return found


def read_api_keys_file(path: Path) -> list[ApiKeyEntry]:
    """The entries of a JSON key file (a list of ``{name, sha256, scopes}``); ConfigError if malformed."""
    try:
        return [ApiKeyEntry.model_validate(item) for item in orjson.loads(path.read_bytes())]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            "STROWGER_SECURITY_API_KEYS_FILE", f"a JSON list of API key entries: {exc}"
        ) from None


# --- JWT ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    key: Any  # a str/bytes secret or a cryptography public key object
    family: str  # "HS", "RS" or "ES": the algorithms this key may verify
    kid: str | None = None


class JwtVerifier:
    """Verifies bearer tokens against the configured keys, issuer, audience and leeway."""

    def __init__(self, settings: SecuritySettings) -> None:
        if not (settings.jwt_issuer and settings.jwt_audience):
            raise ConfigError("STROWGER_SECURITY_JWT_ISSUER", "an issuer and an audience for JWT validation")
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self.keys = _load_keys(settings)
        families = {key.family for key in self.keys}
        # An algorithm without a key of its family could never verify; dropping it keeps the list honest.
        self.algorithms = frozenset(alg for alg in settings.jwt_algorithms if alg[:2] in families)
        if not self.algorithms:
            raise ConfigError("STROWGER_SECURITY_JWT_ALGORITHMS", "an algorithm matching a configured key")

    def principal(self, token: str) -> Principal:
        """The subject and scopes of a valid ``token``, or Unauthenticated saying why not."""
        claims = self.verify(token)
        subject = claims.get("sub") or claims.get("client_id")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("The token has no subject (sub)")
        return Principal(subject=subject, scopes=scopes_of(claims), method="jwt", claims=claims)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once signature, expiry, issuer and audience are checked."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("The bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Unauthenticated(f"Tokens signed with {algorithm!r} are not accepted")
        candidates = self._candidates(str(algorithm), header.get("kid"))
        if not candidates:
            raise Unauthenticated("No key is known for this token (kid)")
        last_error: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                return self._decode(token, key, str(algorithm))
            except jwt.InvalidSignatureError as exc:
                last_error = exc  # another key of the same family may have signed it
            except jwt.PyJWTError as exc:
                raise Unauthenticated(_reason(exc)) from None
        assert last_error is not None
        raise Unauthenticated(_reason(last_error))

    def _candidates(self, algorithm: str, kid: object) -> list[_Key]:
        family = [key for key in self.keys if key.family == algorithm[:2]]
        if isinstance(kid, str):
            named = [key for key in family if key.kid == kid]
            unnamed = [key for key in family if key.kid is None]
            return named or unnamed
        return family

    def _decode(self, token: str, key: _Key, algorithm: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (space-separated string) and/or ``scp`` (list or string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


def _reason(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "The token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "The token is not valid yet"
    if isinstance(error, jwt.InvalidIssuerError):
        return "The token was issued by an issuer this service does not trust"
    if isinstance(error, jwt.InvalidAudienceError):
        return "The token is not meant for this service (aud)"
    if isinstance(error, jwt.InvalidSignatureError):
        return "The token signature is not valid"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"The token lacks the {error.claim!r} claim"
    return "The bearer token is not valid"


def _load_keys(settings: SecuritySettings) -> list[_Key]:
    keys: list[_Key] = []
    if settings.jwt_secret is not None:
        keys.append(_Key(settings.jwt_secret.get_secret_value().encode(), "HS"))
    keys.extend(_pem_key(text) for text in settings.jwt_public_keys)
    if settings.jwt_jwks_file is not None:
        keys.extend(_jwks_keys(settings.jwt_jwks_file))
    return keys


def _pem_key(text_or_path: str) -> _Key:
    pem = text_or_path if "-----BEGIN" in text_or_path else _read(Path(text_or_path))
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError("STROWGER_SECURITY_JWT_PUBLIC_KEYS", f"a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return _Key(key, "RS")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _Key(key, "ES")
    raise ConfigError("STROWGER_SECURITY_JWT_PUBLIC_KEYS", "an RSA or EC public key", type(key).__name__)


def _jwks_keys(path: Path) -> list[_Key]:
    try:
        jwks = jwt.PyJWKSet.from_json(_read(path))
    except jwt.PyJWTError as exc:
        raise ConfigError("STROWGER_SECURITY_JWT_JWKS_FILE", f"a JWKS document: {exc}") from None
    families = {"RSA": "RS", "EC": "ES", "oct": "HS"}
    return [
        _Key(jwk.key, families[jwk.key_type], jwk.key_id) for jwk in jwks.keys if jwk.key_type in families
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError("STROWGER_SECURITY_JWT_PUBLIC_KEYS", f"a readable key file: {exc}") from None


# --- both ---------------------------------------------------------------------------------------


class Authenticator:
    """Turns a request's headers into a :class:`Principal` (bearer JWT or API key)."""

    def __init__(self, settings: SecuritySettings) -> None:
        self.enabled = settings.enabled
        self.jwt = JwtVerifier(settings) if settings.jwt_configured else None
        self.api_keys = ApiKeyStore.from_settings(settings)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller named by ``headers`` (lower-case names), or Unauthenticated."""
        if not self.enabled:
            return Principal(subject="anonymous", scopes=frozenset({"admin"}), method="anonymous")
        authorization = headers.get("authorization")
        if authorization is not None:
            return self._bearer(authorization)
        key = headers.get(API_KEY_HEADER)
        if key:
            return self.api_keys.principal(key)
        raise MissingCredentials()

    def _bearer(self, authorization: str) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer <token>'")
        if self.jwt is None:
            raise Unauthenticated("Bearer tokens are not accepted by this service; use an X-API-Key")
        return self.jwt.principal(token.strip())


def headers_of(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI raw headers as a dict with lower-case names (latin-1, as HTTP defines)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
