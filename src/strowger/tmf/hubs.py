"""TMF630 event subscriptions (``/hub``): the model, query matching, the SSRF guard and signatures.

A listener registers ``{"callback": URL, "query": "eventType=X,Y&event.productOrder.state=completed"}``.
The query uses the filter syntax of :mod:`strowger.tmf.query` applied to the
notification body (``eventType``, ``event.<resource>.<attribute>``...): ``&``
separates conditions that must all hold, a comma list holds if any value does.

Callbacks are checked by :class:`CallbackGuard` when registered; the delivery
loop must check again the addresses it actually connects to (DNS can change
between registration and delivery). A subscription may carry a ``secret``:
deliveries are then signed with :func:`sign` and the secret is never returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from strowger.errors import ConfigError
from strowger.events.envelope import format_time, new_id, utcnow
from strowger.store.db import Database, TableSet
from strowger.tmf.errors import ApiError, BadRequest, ResourceNotFound
from strowger.tmf.query import Condition, parse_condition

SIGNATURE_HEADER = "X-Strowger-Signature"

HUB_TABLES = TableSet(
    name="tmf-hub",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS tmf_hub_subscription (
            api TEXT NOT NULL,
            id TEXT NOT NULL,
            callback TEXT NOT NULL,
            query TEXT NOT NULL,
            secret TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (api, id))""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS tmf_hub_subscription (
            api TEXT NOT NULL,
            id TEXT NOT NULL,
            callback TEXT NOT NULL,
            query TEXT NOT NULL,
            secret TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (api, id))""",
    ],
)


# --- query -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubQuery:
    """Conditions that must all hold on a notification body; no condition matches everything."""

    conditions: tuple[Condition, ...] = ()

    def matches(self, body: Mapping[str, Any]) -> bool:
        return all(condition.matches(body) for condition in self.conditions)


def parse_hub_query(text: str | None) -> HubQuery:
    """A subscription query (``eventType=A,B&event.productOrder.state=completed``), or BadRequest."""
    conditions = []
    for part in (text or "").strip().lstrip("?").split("&"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name, value = unquote_plus(name).strip(), unquote_plus(value).strip()
        if not equals and not any(symbol in name for symbol in "<>"):
            raise BadRequest(f"query: {part!r} is not a condition (name=value)", field="query")
        conditions.append(parse_condition(name, value))
    return HubQuery(tuple(conditions))


# --- subscriptions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    callback: str
    query: str = ""
    secret: str | None = field(default=None, repr=False)
    created_at: str = ""

    def to_tmf(self) -> dict[str, Any]:
        """The TMF EventSubscription resource; the secret is never part of it."""
        return {"id": self.id, "callback": self.callback, "query": self.query}


def matches(subscription: Subscription, body: Mapping[str, Any]) -> bool:
    """Whether the notification ``body`` (the TMF JSON) is to be delivered to ``subscription``."""
    return parse_hub_query(subscription.query).matches(body)


_generation = 0  # bumped each time a subscription change commits in this process


def subscriptions_generation() -> int:
    """Changes when a subscription is added or removed in this process (caches compare it)."""
    return _generation


def _subscriptions_changed() -> None:
    global _generation
    _generation += 1


class HubStore:
    """The subscriptions of one API (``api`` namespaces them) on the database port."""

    def __init__(self, database: Database, api: str) -> None:
        self.database = database
        self.api = api
        self._ready = False
        self._lock = asyncio.Lock()

    async def _ensure_tables(self) -> None:
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    await self.database.create_tables(HUB_TABLES)
                    self._ready = True

    async def add(self, callback: str, query: str = "", secret: str | None = None) -> Subscription:
        await self._ensure_tables()
        subscription = Subscription(new_id(), callback, query, secret, format_time(utcnow()))
        async with self.database.transaction() as tx:
            await tx.execute(
                "INSERT INTO tmf_hub_subscription (api, id, callback, query, secret, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self.api, subscription.id, callback, query, secret, subscription.created_at),
            )
            tx.on_commit(_subscriptions_changed)
        return subscription

    async def get(self, subscription_id: str) -> Subscription | None:
        await self._ensure_tables()
        row = await self.database.fetchone(
            "SELECT id, callback, query, secret, created_at FROM tmf_hub_subscription"
            " WHERE api = ? AND id = ?",
            (self.api, subscription_id),
        )
        return Subscription(*row) if row else None

    async def all(self) -> list[Subscription]:
        """Every subscription, oldest first (what a delivery loop iterates over)."""
        await self._ensure_tables()
        rows = await self.database.fetchall(
            "SELECT id, callback, query, secret, created_at FROM tmf_hub_subscription"
            " WHERE api = ? ORDER BY created_at, id",
            (self.api,),
        )
        return [Subscription(*row) for row in rows]

    async def remove(self, subscription_id: str) -> bool:
        await self._ensure_tables()
        async with self.database.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM tmf_hub_subscription WHERE api = ? AND id = ?", (self.api, subscription_id)
            )
            tx.on_commit(_subscriptions_changed)
        return changed == 1


# --- SSRF guard --------------------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Cloud instance-metadata endpoints: refused even when an allow-list covers them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})


class UnsafeCallback(BadRequest):
    """A callback URL the platform refuses to call (scheme, host or address)."""

    code = "unsafeCallback"


class UnresolvableCallback(UnsafeCallback):
    """The callback host does not resolve (now): refused at registration, retried at delivery."""


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnresolvableCallback(
            f"callback host {host!r} does not resolve: {exc}", field="callback"
        ) from exc
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class CallbackGuard:
    """Refuses callbacks that could reach the platform's own network (SSRF).

    Refused: schemes other than http(s), URLs with credentials, metadata hosts,
    and any address that is not globally routable (loopback, private, link-local
    169.254/16 and fe80::/10, carrier-grade NAT, multicast, reserved) unless
    ``allowed_networks`` contains it. Metadata addresses are always refused.
    """

    allowed_networks: tuple[IpNetwork, ...] = ()
    resolver: Resolver = resolve_host

    @classmethod
    def from_settings(cls, networks: Iterable[str], resolver: Resolver = resolve_host) -> CallbackGuard:
        try:
            parsed = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        except ValueError as exc:
            raise ConfigError("STROWGER_HUB_ALLOWED_NETWORKS", "a list of CIDR networks", exc) from None
        return cls(parsed, resolver)

    def check_address(self, address: str | IpAddress) -> None:
        """UnsafeCallback unless ``address`` may be called."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        if ip in METADATA_ADDRESSES:
            raise UnsafeCallback(f"callback address {ip} is a cloud metadata endpoint", field="callback")
        if any(ip in network for network in self.allowed_networks):
            return
        if ip.is_multicast or not ip.is_global:
            raise UnsafeCallback(
                f"callback address {ip} is not a public address (allow it with "
                "STROWGER_HUB_ALLOWED_NETWORKS)",
                field="callback",
            )

    async def check(self, url: str) -> list[str]:
        """The addresses ``url`` resolves to, all checked; UnsafeCallback if any may not be called."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UnsafeCallback(f"callback must be an http(s) URL, got {url!r}", field="callback")
        if parts.username or parts.password:
            raise UnsafeCallback("callback must not carry credentials", field="callback")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise UnsafeCallback(f"callback has no host: {url!r}", field="callback")
        if host in METADATA_HOSTS:
            raise UnsafeCallback(f"callback host {host!r} is a cloud metadata endpoint", field="callback")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UnsafeCallback(f"callback port is invalid: {exc}", field="callback") from exc
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = await self.resolver(host, port)
        if not addresses:
            raise UnresolvableCallback(f"callback host {host!r} does not resolve", field="callback")
        for address in addresses:
            self.check_address(address)
        return addresses


# --- signatures --------------------------------------------------------------------------------


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header value for a delivery: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.

    The HMAC covers ``"<t>." + body`` so a captured delivery cannot be replayed
    later with a fresh timestamp.
    """
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """Whether ``header`` is a valid signature of ``body``, made less than ``tolerance`` seconds ago."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        moment = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        return False
    expected = sign(secret, body, timestamp=moment).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# --- HTTP --------------------------------------------------------------------------------------


async def subscription_from_body(body: Any, guard: CallbackGuard) -> tuple[str, str, str | None]:
    """``(callback, query, secret)`` from a POST /hub body, every part checked."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", code="invalidBody")
    callback, query, secret = body.get("callback"), body.get("query") or "", body.get("secret")
    if not isinstance(callback, str) or not callback:
        raise BadRequest("callback is required", field="callback", code="missingBodyField")
    if not isinstance(query, str):
        raise BadRequest("query: expected a string", field="query", code="invalidBodyField")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise BadRequest("secret: expected a non-empty string", field="secret", code="invalidBodyField")
    parse_hub_query(query)
    await guard.check(callback)
    return callback, query, secret


def subscription_not_found(subscription_id: str) -> ApiError:
    return ResourceNotFound(f"no hub subscription with id {subscription_id!r}")
