"""The security model end to end on a small FastAPI app: 401, 403, 2xx, 413, 400, audit, admin key."""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request

from strowger.errors import InvalidStateTransition
from strowger.security import (
    ApiKeyEntry,
    Authenticator,
    CurrentPrincipal,
    OperatorAudit,
    Outcome,
    Principal,
    SecuritySettings,
    assert_all_routes_protected,
    ensure_admin_credentials,
    hash_api_key,
    install_security,
    require_scope,
    unprotected_operations,
)
from strowger.store.db import Database
from strowger.tmf.errors import TmfRoute

pytestmark = pytest.mark.integration

ORDERING = "/tmf-api/productOrderingManagement/v4"
ISSUER, AUDIENCE, SECRET = "https://idp.test", "strowger", "k" * 48
KEYS = {name: f"stw_test-key-for-{name}-0123456789abcdef" for name in ("reader", "writer", "operator")}
SCOPES = {"reader": ("tmf622:read",), "writer": ("tmf622:write",), "operator": ("operator",)}


def security_settings(**changes: Any) -> SecuritySettings:
    values: dict[str, Any] = {
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_secret": SECRET,
        "api_keys": tuple(
            ApiKeyEntry(name=name, sha256=hash_api_key(key), scopes=SCOPES[name])
            for name, key in KEYS.items()
        ),
        "api_keys_file": None,
        "max_body_bytes": 2_000,
        "max_array_length": 10,
        "max_string_length": 100,
    }
    values.update(changes)
    return SecuritySettings(**values)


def build_app(database: Database | None = None, settings: SecuritySettings | None = None) -> FastAPI:
    app = FastAPI()
    audit = OperatorAudit(database) if database is not None else None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    orders = APIRouter(prefix=ORDERING, route_class=TmfRoute)

    @orders.get("/productOrder")
    async def list_orders() -> list[dict[str, Any]]:
        return [{"id": "1", "state": "acknowledged"}]

    @orders.post("/productOrder", status_code=201)
    async def create_order(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        body = await request.json()
        return {"id": "2", "state": "acknowledged", "items": len(body.get("productOrderItem", [])),
                "createdBy": principal.subject}  # fmt: skip

    @orders.get("/productOrder/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        return {"id": order_id}

    app.include_router(orders)

    @app.post("/dlq/{letter_id}/discard")
    async def discard(letter_id: int, principal: CurrentPrincipal) -> dict[str, Any]:
        assert audit is not None
        try:
            async with audit.action(
                subject=principal.subject,
                action="dlq.discard",
                target=f"deadLetter/{letter_id}",
                reason="poison",
            ):
                if letter_id == 404:
                    raise InvalidStateTransition("already discarded")
        except InvalidStateTransition as exc:
            raise HTTPException(409, str(exc)) from None
        return {"discarded": letter_id}

    @app.get("/schema-registry/subjects")
    async def subjects(
        principal: Principal = Depends(require_scope("schema-registry:read")),  # noqa: B008
    ) -> list[str]:
        return ["productOrder"]

    install_security(app, settings or security_settings())
    return app


@pytest.fixture
async def client(sqlite_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    await OperatorAudit(sqlite_db).create_tables()
    transport = httpx.ASGITransport(app=build_app(sqlite_db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def bearer(scope: str, **changes: Any) -> dict[str, str]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 60, "scope": scope}
    claims.update(changes)
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@dataclass(frozen=True)
class Bearer:
    """A bearer token minted when the test runs: one minted at collection time would have
    expired by the time a long suite reaches the test."""

    scope: str
    expires_in: int = 60
    changes: tuple[tuple[str, Any], ...] = ()

    def headers(self) -> dict[str, str]:
        return bearer(self.scope, exp=int(time.time()) + self.expires_in, **dict(self.changes))


def as_headers(headers: dict[str, str] | Bearer) -> dict[str, str]:
    return headers.headers() if isinstance(headers, Bearer) else headers


async def test_health_is_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"{ORDERING}/productOrder"), ("POST", f"{ORDERING}/productOrder"), ("POST", "/dlq/1/discard"),
     ("GET", "/schema-registry/subjects"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/nowhere")],
)  # fmt: skip
async def test_no_credentials_is_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="strowger"'
    assert response.json() == {
        "code": "unauthenticated",
        "reason": "Missing or invalid credentials",
        "message": "Credentials are required: a bearer token or an X-API-Key header",
        "status": "401",
        "@type": "Error",
    }


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": "stw_wrong"}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic dTpw"},
     Bearer("tmf622:read", expires_in=-3600), Bearer("tmf622:read", changes=(("aud", "other"),))],
    ids=["unknown-key", "garbage-token", "basic", "expired", "wrong-audience"],
)  # fmt: skip
async def test_invalid_credentials_are_401_invalid_token(
    client: httpx.AsyncClient, headers: dict[str, str] | Bearer
) -> None:
    response = await client.get(f"{ORDERING}/productOrder", headers=as_headers(headers))

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["@type"] == "Error"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", f"{ORDERING}/productOrder", key("reader")),
        ("POST", "/dlq/1/discard", key("writer")),
        ("GET", f"{ORDERING}/productOrder", key("operator")),
        ("GET", f"{ORDERING}/productOrder", Bearer("tmf620:read")),
        ("GET", "/schema-registry/subjects", key("writer")),
    ],
)
async def test_a_missing_scope_is_403(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | Bearer
) -> None:
    response = await client.request(method, path, headers=as_headers(headers), json={})

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_the_right_scope_is_served(client: httpx.AsyncClient) -> None:
    listed = await client.get(f"{ORDERING}/productOrder", headers=key("reader"))
    read_by_writer = await client.get(f"{ORDERING}/productOrder/7", headers=key("writer"))
    created = await client.post(
        f"{ORDERING}/productOrder", headers=bearer("tmf622:write"), json={"productOrderItem": [{"id": "1"}]}
    )
    registry = await client.get("/schema-registry/subjects", headers=bearer("admin"))
    docs = await client.get("/openapi.json", headers=key("reader"))

    assert listed.status_code == 200
    assert read_by_writer.json() == {"id": "7"}
    assert created.status_code == 201
    assert created.json()["createdBy"] == "alice"
    assert registry.json() == ["productOrder"]
    assert docs.status_code == 200


async def test_an_oversized_body_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{ORDERING}/productOrder", headers=key("writer"), json={"note": "x" * 5_000}
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payloadTooLarge"


async def test_a_streamed_body_without_length_is_cut_at_the_limit(client: httpx.AsyncClient) -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"[" + b"1," * 250 + b"1]"

    response = await client.post(
        f"{ORDERING}/productOrder",
        headers={**key("writer"), "Content-Type": "application/json"},
        content=chunks(),
    )

    assert response.status_code == 413
    assert chunks_sent < 10  # refused as soon as the limit was crossed, not after reading it all


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"productOrderItem": [' + b",".join([b"{}"] * 11) + b"]}",
            "$.productOrderItem: array of 11 items",
        ),
        (b'{"productOrderItem": [{"note": "' + b"y" * 101 + b'"}]}', "$.productOrderItem[0].note: string"),
        (b'{"productOrderItem": [', "not valid JSON"),
    ],
    ids=["long-array", "long-string", "malformed"],
)
async def test_bad_json_is_400_naming_the_path(client: httpx.AsyncClient, body: bytes, message: str) -> None:
    response = await client.post(
        f"{ORDERING}/productOrder",
        headers={**key("writer"), "Content-Type": "application/json"},
        content=body,
    )

    assert response.status_code == 400
    assert message in response.json()["message"]
    assert response.json()["@type"] == "Error"


async def test_an_unauthenticated_body_is_never_parsed(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{ORDERING}/productOrder", json={"note": "x" * 5_000})

    assert response.status_code == 401


async def test_a_bad_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{ORDERING}/productOrder", headers={**key("writer"), "Content-Length": "lots"}, content=b"{}"
    )

    assert response.status_code == 400


async def test_operator_actions_are_audited_with_the_caller(
    client: httpx.AsyncClient, sqlite_db: Database
) -> None:
    done = await client.post("/dlq/12/discard", headers=key("operator"))
    refused = await client.post("/dlq/404/discard", headers=bearer("operator"))

    assert done.json() == {"discarded": 12}
    assert refused.status_code == 409
    entries = await OperatorAudit(sqlite_db).list()
    assert [(e.subject, e.target, e.outcome) for e in entries] == [
        ("alice", "deadLetter/404", Outcome.REFUSED),
        ("apikey:operator", "deadLetter/12", Outcome.SUCCEEDED),
    ]
    assert "already discarded" in entries[0].detail


async def test_every_route_of_the_app_is_closed() -> None:
    checked = await assert_all_routes_protected(build_app())

    assert checked >= 7  # the TMF, operator and registry routes, /openapi.json and the docs pages


async def test_the_route_check_finds_an_open_route() -> None:
    app = build_app()

    @app.get("/leak", include_in_schema=False)
    async def leak() -> str:
        return "secret"

    app.user_middleware.clear()  # as if install_security had been forgotten
    app.middleware_stack = None

    failures = await unprotected_operations(app)

    assert "GET /leak -> 200" in failures
    with pytest.raises(AssertionError, match="/leak"):
        await assert_all_routes_protected(app)


async def test_with_security_disabled_everything_is_served() -> None:
    app = build_app(settings=security_settings(enabled=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        assert (await http.get(f"{ORDERING}/productOrder")).status_code == 200


# --- the audit table on both database backends --------------------------------------------------


@pytest.fixture(params=["sqlite_db", "postgres_db"])
def database(request: pytest.FixtureRequest) -> Database:
    # A sync fixture: pytest-asyncio sets up the async database fixture it names.
    db: Database = request.getfixturevalue(request.param)
    return db


async def test_audit_entries_commit_and_roll_back_with_the_action(database: Database) -> None:
    audit = OperatorAudit(database)
    await audit.create_tables()
    async with database.transaction() as tx:
        await audit.record(tx, subject="bob", action="saga.retry", target="saga/1", reason="stuck")
    with pytest.raises(RuntimeError):
        async with database.transaction() as tx:
            await audit.record(tx, subject="bob", action="saga.skip", target="saga/1")
            raise RuntimeError("the action failed")

    [entry] = await audit.list()

    assert (entry.subject, entry.action, entry.target, entry.reason) == (
        "bob",
        "saga.retry",
        "saga/1",
        "stuck",
    )
    assert entry.outcome is Outcome.SUCCEEDED
    assert abs(entry.occurred_at.timestamp() - time.time()) < 60


async def test_audit_list_filters_and_pages(database: Database) -> None:
    audit = OperatorAudit(database)
    await audit.create_tables()
    for number in range(5):
        async with database.transaction() as tx:
            await audit.record(
                tx,
                subject="carol" if number % 2 else "dave",
                action="dlq.replay",
                target=f"deadLetter/{number}",
            )
    with pytest.raises(ValueError, match="boom"):
        async with audit.action(subject="erin", action="saga.abort", target="saga/9"):
            raise ValueError("boom")

    newest = await audit.list(limit=2)
    older = await audit.list(limit=10, before_id=newest[-1].id)
    carol = await audit.list(subject="carol")
    failed = await audit.list(action="saga.abort")
    recent = await audit.list(since=newest[0].occurred_at)

    assert [e.target for e in newest] == ["saga/9", "deadLetter/4"]
    assert [e.target for e in older] == [f"deadLetter/{n}" for n in (3, 2, 1, 0)]
    assert [e.target for e in carol] == ["deadLetter/3", "deadLetter/1"]
    assert failed[0].outcome is Outcome.FAILED and failed[0].detail == "ValueError: boom"
    assert recent[0].target == "saga/9"
    assert failed[0].to_json()["occurredAt"].endswith("Z")


# --- the embedded default's admin key -----------------------------------------------------------


def test_the_admin_key_is_created_once_and_only_its_hash_is_registered(tmp_path: Path) -> None:
    settings = SecuritySettings(api_keys_file=tmp_path / "security" / "api-keys.json")

    first = ensure_admin_credentials(settings, tmp_path)
    second = ensure_admin_credentials(settings, tmp_path)

    assert first == second and first.startswith("stw_")
    keys_file = (tmp_path / "security" / "api-keys.json").read_text()
    assert first not in keys_file and hash_api_key(first) in keys_file
    for path in (tmp_path / "security" / "admin-api-key", tmp_path / "security" / "api-keys.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = Authenticator(settings).authenticate({"x-api-key": first})
    assert principal.subject == "apikey:admin" and principal.scopes == {"admin"}


def test_a_lost_registration_is_restored_for_the_same_key(tmp_path: Path) -> None:
    settings = SecuritySettings(api_keys_file=tmp_path / "keys.json")
    key_value = ensure_admin_credentials(settings, tmp_path)
    (tmp_path / "keys.json").unlink()

    assert ensure_admin_credentials(settings, tmp_path) == key_value
    assert Authenticator(settings).authenticate({"x-api-key": key_value}).subject == "apikey:admin"


def test_no_admin_key_when_security_is_disabled(tmp_path: Path) -> None:
    settings = SecuritySettings(enabled=False, api_keys_file=tmp_path / "keys.json")

    assert ensure_admin_credentials(settings, tmp_path) == ""
    assert not (tmp_path / "keys.json").exists()


def test_production_turns_the_admin_key_off_and_nothing_is_written(tmp_path: Path) -> None:
    settings = SecuritySettings(admin_key=False, api_keys_file=tmp_path / "keys.json")

    assert ensure_admin_credentials(settings, tmp_path) == ""
    assert not (tmp_path / "keys.json").exists()
    assert not (tmp_path / "security").exists()


def test_the_openapi_document_declares_both_credentials_and_the_open_routes() -> None:
    document = build_app().openapi()

    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKey"}
    assert document["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "security" not in document["paths"][f"{ORDERING}/productOrder"]["get"]
