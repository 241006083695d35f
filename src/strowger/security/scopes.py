"""Which scope a request needs, derived from its path and method, and whether a grant covers it.

Scope strings (docs/security.md has the full model):

* ``<api>:read`` / ``<api>:write`` — one API, e.g. ``tmf620:read``, ``tmf622:write``,
  ``schema-registry:write``. ``write`` implies ``read`` on the same API.
* ``*:read`` / ``*:write`` — that operation on every API (never operator actions).
* ``operator`` — dead-letter, saga and audit routes.
* ``admin`` — everything.

A TMF API's scope name is its TMF number when the API is known (``tmf620``),
otherwise its ``apiName`` from the path. A route nobody classified needs
``admin``: a new route is closed until someone decides who may call it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ADMIN = "admin"
OPERATOR = "operator"

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# apiName in /tmf-api/<apiName>/v4/... -> TMF number, as the v4 specs' basePath spell it.
TMF_API_NUMBERS: dict[str, str] = {
    "productCatalogManagement": "tmf620",
    "troubleTicket": "tmf621",
    "productOrderingManagement": "tmf622",
    "productOrdering": "tmf622",
    "customerManagement": "tmf629",
    "party": "tmf632",
    "partyManagement": "tmf632",
    "serviceCatalogManagement": "tmf633",
    "resourceCatalog": "tmf634",
    "resourceCatalogManagement": "tmf634",
    "productInventory": "tmf637",
    "productInventoryManagement": "tmf637",
    "serviceInventory": "tmf638",
    "serviceInventoryManagement": "tmf638",
    "resourceInventoryManagement": "tmf639",
    "resourceInventory": "tmf639",
    "serviceActivationAndConfiguration": "tmf640",
    "serviceOrdering": "tmf641",
    "serviceOrderingManagement": "tmf641",
    "alarmManagement": "tmf642",
    "resourceOrdering": "tmf652",
    "resourceOrderingManagement": "tmf652",
    "accountManagement": "tmf666",
    "customerBillManagement": "tmf678",
    "resourcePoolManagement": "tmf685",
    "event": "tmf688",
}


class Operation(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Access(enum.Enum):
    PUBLIC = "public"  # no credentials at all (health probes)
    AUTHENTICATED = "authenticated"  # any valid credential (API documentation)
    SCOPE = "scope"  # a credential granting ``Requirement.scope``


@dataclass(frozen=True)
class Requirement:
    """What a request needs: nothing, any valid credential, or one scope."""

    access: Access
    scope: str = ""

    def __str__(self) -> str:
        return self.scope if self.access is Access.SCOPE else self.access.value


PUBLIC = Requirement(Access.PUBLIC)
AUTHENTICATED = Requirement(Access.AUTHENTICATED)


def needs(scope: str) -> Requirement:
    return Requirement(Access.SCOPE, scope)


def operation_of(method: str) -> Operation:
    """GET, HEAD and OPTIONS read; every other method writes."""
    return Operation.READ if method.upper() in READ_METHODS else Operation.WRITE


def tmf_scope_name(api_name: str) -> str:
    """``tmf620`` for ``productCatalogManagement``; an unknown API keeps its own name."""
    return TMF_API_NUMBERS.get(api_name, api_name)


@dataclass(frozen=True)
class Rule:
    """An explicit entry of the route table: ``pattern`` matched segment by segment.

    ``*`` matches one path segment, a final ``**`` any number (including none).
    ``methods`` empty means every method. ``requirement`` None means "the API
    ``api`` with the operation from the method", e.g. ``schema-registry:write``.
    """

    pattern: str
    requirement: Requirement | None = None
    api: str = ""
    methods: frozenset[str] = frozenset()

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        return _segments_match(_segments(self.pattern), _segments(path))

    def requirement_for(self, method: str) -> Requirement:
        if self.requirement is not None:
            return self.requirement
        return needs(f"{self.api}:{operation_of(method)}")


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _segments_match(pattern: Sequence[str], path: Sequence[str]) -> bool:
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(path) >= len(head) and _segments_match(head, path[: len(head)])
    if len(pattern) != len(path):
        return False
    return all(want in ("*", got) for want, got in zip(pattern, path, strict=True))


DEFAULT_PUBLIC_PATHS = ("/health", "/ready")
# Pages that hold no data (the dashboard's shell asks for a key, then fetches its data with it):
# a browser cannot send a header when it navigates, so GET on these needs no credential.
PUBLIC_PAGES = ("/dashboard",)

DEFAULT_RULES: tuple[Rule, ...] = (
    *(Rule(page, PUBLIC, methods=frozenset(READ_METHODS)) for page in PUBLIC_PAGES),
    Rule("/dashboard/api/**", needs(OPERATOR), methods=frozenset(READ_METHODS)),
    Rule("/dlq/**", needs(OPERATOR)),
    Rule("/sagas/**", needs(OPERATOR)),
    Rule("/audit/**", needs(OPERATOR)),
    Rule("/trace/**", needs(OPERATOR), methods=frozenset(READ_METHODS)),
    Rule("/analytics/**", needs(OPERATOR), methods=frozenset(READ_METHODS)),
    Rule("/activation/**", needs(OPERATOR)),
    Rule("/schema-registry/**", api="schema-registry"),
    Rule("/asyncapi.json", needs("schema-registry:read")),
    Rule("/metrics", needs("metrics:read")),
    Rule("/", AUTHENTICATED, methods=frozenset(READ_METHODS)),
    Rule("/openapi.json", AUTHENTICATED, methods=frozenset(READ_METHODS)),
    Rule("/docs/**", AUTHENTICATED, methods=frozenset(READ_METHODS)),
    Rule("/redoc", AUTHENTICATED, methods=frozenset(READ_METHODS)),
)


REQUIREMENT_CACHE_SIZE = 4096  # (method, path) pairs whose requirement is remembered


class RouteTable:
    """Maps (method, path) to a :class:`Requirement`.

    Order: the public paths, then ``overrides``, then ``defaults``, then the TMF
    path convention; a path none of them knows needs ``admin``.
    """

    def __init__(
        self,
        overrides: Iterable[Rule] = (),
        *,
        public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
        defaults: Iterable[Rule] = DEFAULT_RULES,
    ) -> None:
        public = tuple(Rule(path, PUBLIC) for path in public_paths)
        # Overrides precede the defaults so a deployment can tighten or relax any of them.
        self.rules: tuple[Rule, ...] = (*public, *overrides, *defaults)
        # Patterns split once, not per request (every request walks this table).
        self._split = tuple((rule, _segments(rule.pattern)) for rule in self.rules)
        # Most requests go to a few paths (a collection's POST, its list): each walks the
        # table once. Bounded, since item paths carry ids.
        self.requirement = functools.lru_cache(maxsize=REQUIREMENT_CACHE_SIZE)(self._requirement)

    def _requirement(self, method: str, path: str) -> Requirement:
        """What ``method`` on ``path`` needs (:attr:`requirement` is this, cached)."""
        upper = method.upper()
        segments = _segments(path)
        for rule, pattern in self._split:
            if (not rule.methods or upper in rule.methods) and _segments_match(pattern, segments):
                return rule.requirement_for(method)
        api = _tmf_api_name(path)
        if api is not None:
            return needs(f"{tmf_scope_name(api)}:{operation_of(method)}")
        return needs(ADMIN)


def _tmf_api_name(path: str) -> str | None:
    """``productCatalogManagement`` for ``/tmf-api/productCatalogManagement/v4/...``."""
    segments = _segments(path)
    if len(segments) >= 3 and segments[0] == "tmf-api" and segments[2][:1] == "v":
        return segments[1]
    return None


def grants(scopes: Iterable[str], requirement: Requirement) -> bool:
    """Whether a credential holding ``scopes`` may make a request needing ``requirement``."""
    if requirement.access is not Access.SCOPE:
        return True
    held = frozenset(scopes)
    wanted = requirement.scope
    if ADMIN in held or wanted in held:
        return True
    api, _, operation = wanted.rpartition(":")
    if not api or operation not in (Operation.READ, Operation.WRITE):
        return False  # operator, admin and custom scopes are granted only by name
    acceptable = {f"{api}:write", "*:write"} | ({"*:read"} if operation == Operation.READ else set())
    return not held.isdisjoint(acceptable)
