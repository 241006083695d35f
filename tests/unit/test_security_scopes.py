"""Which scope a route needs, and which grants cover it."""

from __future__ import annotations

import pytest

from strowger.security.scopes import (
    ADMIN,
    AUTHENTICATED,
    OPERATOR,
    PUBLIC,
    Requirement,
    RouteTable,
    Rule,
    grants,
    needs,
)

CATALOG = "/tmf-api/productCatalogManagement/v4"
ORDERING = "/tmf-api/productOrderingManagement/v4"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/health", PUBLIC),
        ("GET", "/ready", PUBLIC),
        ("GET", f"{CATALOG}/productOffering", needs("tmf620:read")),
        ("HEAD", f"{CATALOG}/productOffering/42", needs("tmf620:read")),
        ("POST", f"{CATALOG}/productOffering", needs("tmf620:write")),
        ("PATCH", f"{CATALOG}/productOffering/42", needs("tmf620:write")),
        ("DELETE", f"{CATALOG}/hub/7", needs("tmf620:write")),
        ("POST", f"{ORDERING}/productOrder", needs("tmf622:write")),
        ("GET", "/tmf-api/serviceOrdering/v4/serviceOrder", needs("tmf641:read")),
        ("GET", "/tmf-api/someFutureApi/v5/thing", needs("someFutureApi:read")),
        ("GET", "/dlq", needs(OPERATOR)),
        ("POST", "/dlq/replay", needs(OPERATOR)),
        ("POST", "/dlq/12/discard", needs(OPERATOR)),
        ("POST", "/sagas/abc/force-complete", needs(OPERATOR)),
        ("GET", "/schema-registry/subjects", needs("schema-registry:read")),
        ("POST", "/schema-registry/subjects/x/versions", needs("schema-registry:write")),
        ("DELETE", "/schema-registry/subjects/x", needs("schema-registry:write")),
        ("GET", "/openapi.json", AUTHENTICATED),
        ("GET", "/docs", AUTHENTICATED),
        ("POST", "/openapi.json", needs(ADMIN)),
        ("GET", "/something/nobody/classified", needs(ADMIN)),
        ("GET", "/tmf-api", needs(ADMIN)),
    ],
)
def test_the_requirement_is_derived_from_path_and_method(
    method: str, path: str, expected: Requirement
) -> None:
    assert RouteTable().requirement(method, path) == expected


def test_empty_segments_do_not_dodge_a_rule() -> None:
    assert RouteTable().requirement("POST", "//dlq//replay") == needs(OPERATOR)


def test_an_override_wins_over_the_defaults() -> None:
    table = RouteTable(
        [
            Rule(f"{ORDERING}/productOrder/*/cancel", needs(OPERATOR), methods=frozenset({"POST"})),
            Rule("/metrics", PUBLIC),
        ]
    )

    assert table.requirement("POST", f"{ORDERING}/productOrder/9/cancel") == needs(OPERATOR)
    assert table.requirement("GET", f"{ORDERING}/productOrder/9/cancel") == needs("tmf622:read")
    assert table.requirement("GET", "/metrics") == PUBLIC


def test_public_paths_are_configurable() -> None:
    table = RouteTable(public_paths=["/health"])

    assert table.requirement("GET", "/ready") == needs(ADMIN)
    assert table.requirement("GET", "/health") == PUBLIC


@pytest.mark.parametrize(
    ("held", "required", "allowed"),
    [
        ({"tmf620:read"}, "tmf620:read", True),
        ({"tmf620:read"}, "tmf620:write", False),
        ({"tmf620:write"}, "tmf620:read", True),
        ({"tmf620:write"}, "tmf622:read", False),
        ({"*:read"}, "tmf622:read", True),
        ({"*:read"}, "tmf622:write", False),
        ({"*:write"}, "schema-registry:read", True),
        ({"*:write"}, OPERATOR, False),
        ({"tmf622:write"}, OPERATOR, False),
        ({OPERATOR}, OPERATOR, True),
        ({OPERATOR}, "tmf622:read", False),
        ({ADMIN}, OPERATOR, True),
        ({ADMIN}, "tmf622:write", True),
        (set(), "tmf622:read", False),
        ({"tmf620:read"}, ADMIN, False),
        ({"*:write"}, ADMIN, False),
    ],
)
def test_grants(held: set[str], required: str, allowed: bool) -> None:
    assert grants(held, needs(required)) is allowed


def test_any_credential_opens_an_authenticated_route() -> None:
    assert grants(set(), AUTHENTICATED)
