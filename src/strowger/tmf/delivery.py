"""TMF hub webhook delivery: at-least-once, ordered per (listener, entity), signed, SSRF-guarded.

Two stages, both restart-safe (docs/tmf-apis.md, "Hub delivery"):

1. **Fan-out** — a consumer of the event bus (group ``hub-delivery``, one
   :class:`~strowger.bus.runtime.Consumer` on every topic that carries TMF
   notifications). For each event it finds the subscriptions of the API that
   published it (:class:`HubRoute` maps topic and event type to the API) whose
   ``query`` matches the body, and enqueues one delivery per subscription. The
   runtime's inbox makes the fan-out exactly-once: a redelivered event is not
   enqueued twice.
2. **Delivery** — :class:`DeliveryWorker` POSTs each queued delivery to its
   callback, concurrently across listeners (one keep-alive pool, bounded
   overall and per listener), one at a time per (listener, entity).

The direct path (``DeliveryOptions.direct``, on by default) skips the queue when
all goes well: before the fan-out's transaction opens (the runtime's *prepare*
step, so no database lock is held during HTTP), the worker POSTs each fresh event
to every matching listener that is healthy and has nothing queued for the event's
entity, one entity's events after another, within ``direct_budget`` seconds. The
transaction then queues only what did not get a 2xx: a failure as a retry (attempt
1, with the backoff) or a dead letter, what was cut off by the budget as due now,
and the entity's later events behind them. A listener that failed or was slow is
served from the queue only for ``degraded_for`` seconds. A crash between the POST
and the commit redelivers the event and POSTs it again: at-least-once, which the
eventId header lets a listener absorb.

The queue is the runtime's sequenced parking lot (``parked``, see
:mod:`strowger.store.deadletters`): each subscription is a consumer named
``hub-delivery/<api>/<subscription id>``. A delivery is a ``retrying`` head due
now, or ``blocked`` behind an earlier delivery of the same entity to the same
listener; a failure moves ``next_attempt_at`` by the backoff; a spent or
permanent failure makes the head ``dead``, and the listener's later events of
that entity wait behind it. So ``strowger dlq`` and ``/dlq`` list, show, replay
and discard failed webhook deliveries like any dead letter.

A claimed delivery is leased (``next_attempt_at`` pushed ``lease`` seconds ahead),
not locked: a worker that dies mid-request leaves the delivery due again when
the lease ends, so several worker processes may share the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from strowger.bus.port import Delivery
from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.errors import PermanentError, TransientError, is_transient
from strowger.events.envelope import Envelope, Header, Message, parse_time
from strowger.security.cookies import no_cookie_jar
from strowger.store.db import Database, Row, TableSet, Transaction
from strowger.store.deadletters import PARKED_TABLES, Failure, ParkingLot, Status, now
from strowger.store.inbox import Inbox
from strowger.tmf.errors import ApiError
from strowger.tmf.http1 import Http1Client, Http1Error, Http1Timeout, InvalidRequest, is_ip_literal
from strowger.tmf.hubs import (
    HUB_TABLES,
    SIGNATURE_HEADER,
    CallbackGuard,
    HubQuery,
    Subscription,
    UnresolvableCallback,
    UnsafeCallback,
    parse_hub_query,
    sign,
    subscriptions_generation,
)
from strowger.tmf.query import Op
from strowger.tmf.resources import TmfApi

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

log = logging.getLogger("strowger.hub")

HUB_CONSUMER = "hub-delivery"
QUEUE_PREFIX = f"{HUB_CONSUMER}/"
EVENT_ID_HEADER = "X-Event-Id"
EVENT_TYPE_HEADER = "X-Event-Type"
CORRELATION_ID_HEADER = "X-Correlation-Id"
ATTEMPT_HEADER = "X-Strowger-Delivery-Attempt"

# The claim query scans heads only (status first), across every listener's queue.
HUB_DELIVERY_TABLES = TableSet(
    name="tmf-hub-delivery",
    sqlite=["CREATE INDEX IF NOT EXISTS parked_status_due ON parked (status, next_attempt_at)"],
    postgresql=["CREATE INDEX IF NOT EXISTS parked_status_due ON parked (status, next_attempt_at)"],
)


def queue_name(api: str, subscription_id: str) -> str:
    """The parked-table consumer that holds one subscription's deliveries."""
    return f"{QUEUE_PREFIX}{api}/{subscription_id}"


def parse_queue_name(name: str) -> tuple[str, str]:
    """``(api, subscription id)`` of a delivery queue name."""
    api, _, subscription_id = name.removeprefix(QUEUE_PREFIX).partition("/")
    return api, subscription_id


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How deliveries are made; the defaults suit a production platform."""

    timeout: float = 10.0  # seconds for connect, write and read of one POST
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)  # before retry 1, 2, ...; then dead
    max_in_flight: int = 128  # concurrent POSTs in this process
    per_listener: int = 32  # concurrent POSTs to one subscription (a slow listener keeps only these)
    batch_size: int = 128  # deliveries claimed per query
    lease: float = 60.0  # a claimed delivery is due again after this (its worker died)
    poll_interval: float = 1.0  # longest idle sleep (deliveries enqueued by another process)
    max_response_bytes: int = 64 * 1024  # read from a response before giving the connection up
    address_ttl: float = 30.0  # seconds a checked DNS answer is reused
    max_retry_after: float = 3600.0  # cap on a listener's Retry-After
    user_agent: str = "strowger-hub/1"
    direct: bool = True  # POST fresh events before the fan-out commits; queue only what failed
    direct_budget: float = 2.0  # seconds a batch's direct POSTs may take; the rest are queued
    degraded_for: float = 30.0  # seconds a listener that failed or was slow gets only queued deliveries

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.lease <= self.timeout:
            raise ValueError("timeout > 0 and lease > timeout (a lease must outlive its request)")
        if min(self.max_in_flight, self.per_listener, self.batch_size) < 1:
            raise ValueError("max_in_flight, per_listener and batch_size must be >= 1")
        if any(delay < 0 for delay in self.backoff) or self.poll_interval <= 0:
            raise ValueError("backoff delays >= 0 and poll_interval > 0")
        if self.direct_budget <= 0 or self.degraded_for < 0:
            raise ValueError("direct_budget > 0 and degraded_for >= 0")


# --- fan-out -----------------------------------------------------------------------------------

Chain = list[tuple[Envelope, Delivery]]  # one entity's events for one listener, in order
DirectPlan = list[tuple[Subscription, str, list[Chain]]]  # (subscription, its queue, chains)


@dataclass(frozen=True, slots=True)
class HubRoute:
    """The events of ``topic`` (of ``event_types``, or all) go to the subscribers of API ``api``."""

    api: str
    topic: str
    event_types: frozenset[str] = frozenset()

    @classmethod
    def of(cls, api: TmfApi) -> HubRoute:
        """The route of a toolkit API: its topic, the event types its resources emit."""
        types = {resource.event_type(kind) for resource in api.resources for kind in resource.events}
        return cls(api.name, api.topic, frozenset(types))

    def carries(self, topic: str, event_type: str) -> bool:
        return topic == self.topic and (not self.event_types or event_type in self.event_types)


@lru_cache(maxsize=4096)
def _compiled(query: str) -> HubQuery:
    return parse_hub_query(query)  # validated at registration; cached: parsed on every event otherwise


class SubscribedTypes:
    """Which event types a hub subscription may want: the fan-out's filter, applied before decoding.

    Without it the fan-out decodes and records in its inbox every event of every TMF API
    (15 per product order) to find that nobody subscribed. The answer is cached and errs
    on the side of delivering: while the cache is unknown, older than ``max_age`` seconds,
    or a subscription changed in this process since it was read, every type is wanted
    (and a refresh is started). So a subscription made in this process counts at once,
    one made by another process within ``max_age``; the fan-out itself still checks each
    event against the subscriptions in its own transaction.

    A subscription made by ANOTHER process (the cluster runs the APIs apart from
    ``hub-delivery``) after the last read is unknown here, yet must get every event produced
    after its 201. So an event of an unwanted type is skipped only if it was produced
    (``producedAt``) at least ``clock_skew`` seconds before that read began: any subscription
    it should reach had committed by then and the read saw it. Fresher events (and events with
    no readable ``producedAt``) go to the fan-out, which decides in its transaction. A backlog
    is where the gate saves the most, and a backlog is made of older events.
    """

    def __init__(
        self,
        database: Database,
        routes: Sequence[HubRoute],
        *,
        max_age: float = 1.0,
        clock_skew: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.routes = tuple(routes)
        self.max_age = max_age
        self.clock_skew = clock_skew  # how far producers' clocks may be ahead of ours
        self.clock = clock
        self.wall_clock = wall_clock
        self._read_at = float("-inf")  # wall-clock time the cached read began
        self._wanted: frozenset[str] | None = None  # None: every type (unknown, or a route takes all)
        self._fresh_until = float("-inf")
        self._generation = -1
        self._refreshing: asyncio.Task[None] | None = None

    def wants(self, message: Message) -> bool:
        moment = self.clock()
        if moment > self._fresh_until or self._generation != subscriptions_generation():
            self._start_refresh()
            return True
        if moment > self._fresh_until - self.max_age / 2:
            self._start_refresh()  # ahead of expiry: a steady stream never finds the cache stale
        if self._wanted is None or message.event_type in self._wanted:
            return True
        return not self._produced_before_read(message)

    def _produced_before_read(self, message: Message) -> bool:
        try:
            produced = parse_time(message.headers[Header.PRODUCED_AT]).timestamp()
        except (KeyError, ValueError, TypeError):
            return False  # cannot tell: let the fan-out decide
        return produced + self.clock_skew < self._read_at

    def _start_refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the cache stays stale, so every type stays wanted: nothing is lost
            log.warning("could not read the hub subscriptions; filtering nothing", exc_info=True)

    async def refresh(self) -> None:
        """Read the subscriptions again (one query; the generation is taken first, so a change
        committed while it runs makes the next call refresh again)."""
        generation, started, read_at = subscriptions_generation(), self.clock(), self.wall_clock()
        rows = await self.database.fetchall("SELECT api, query FROM tmf_hub_subscription")
        self._wanted = self._types({(str(api), str(query)) for api, query in rows})
        self._generation, self._fresh_until, self._read_at = generation, started + self.max_age, read_at

    def _types(self, subscriptions: Iterable[tuple[str, str]]) -> frozenset[str] | None:
        wanted: set[str] = set()
        for api, query in subscriptions:
            named = _event_types(query)
            for route in self.routes:
                if route.api != api:
                    continue
                if not route.event_types and named is None:
                    return None  # a route carrying any type, to a subscriber of every type
                carried = route.event_types if route.event_types else frozenset(named or ())
                wanted.update(carried if named is None else carried & named)
        return frozenset(wanted)


def _event_types(query: str) -> frozenset[str] | None:
    """The event types ``query`` can match (its ``eventType=`` values), or None: any type."""
    try:
        conditions = _compiled(query).conditions
    except ApiError:
        return None  # not parseable here: let the fan-out decide (it reports it)
    named: frozenset[str] | None = None
    for condition in conditions:
        if condition.path == ("eventType",) and condition.op is Op.EQ:
            values = frozenset(condition.values)
            named = values if named is None else named & values
    return named


@dataclass(frozen=True, slots=True)
class GatedConsumer(Consumer):
    """A consumer whose event-type filter is a live predicate (:class:`SubscribedTypes`)."""

    gate: Callable[[Message], bool] = field(default=lambda message: True)

    def wants_message(self, message: Message) -> bool:
        # Consumer.wants by name: zero-argument super() fails in a slots dataclass before 3.14.
        return Consumer.wants(self, message.event_type) and self.gate(message)


class HubFanOut:
    """The ``hub-delivery`` consumer's handler: one queued delivery per matching subscription.

    Given the ``database`` (and routes naming their event types, as the platform's do), its
    consumer skips, before decoding them, the events of types no subscription wants
    (:class:`SubscribedTypes`); otherwise every event reaches the handler.
    """

    def __init__(
        self,
        routes: Sequence[HubRoute],
        *,
        postgresql: bool = False,
        wake: Callable[[], None] = lambda: None,
        database: Database | None = None,
        direct: DeliveryWorker | None = None,
    ) -> None:
        self.routes = tuple(routes)
        self._postgresql = postgresql  # PostgreSQL: the sequence check share-locks the rows ahead
        self._wake = wake
        self._lot = ParkingLot()
        self._database = database
        self.subscribed = SubscribedTypes(database, self.routes) if database is not None else None
        # The direct path needs the database to read subscriptions before the transaction.
        self.direct = direct if direct is not None and direct.options.direct and database else None

    def consumer(self, *, backoff: tuple[float, ...] = (1.0, 5.0, 30.0), batch_size: int = 500) -> Consumer:
        """The bus consumer; filtered by subscribed types when every route names the types it carries."""
        topics = tuple(sorted({route.topic for route in self.routes}))
        carried = frozenset(t for route in self.routes for t in route.event_types)
        prepare = self.prepare if self.direct is not None else None
        if self.subscribed is None or any(not route.event_types for route in self.routes):
            return Consumer(
                HUB_CONSUMER,
                topics,
                self,
                retry_backoff=backoff,
                batch_size=batch_size,
                batch_handler=self.fan_out,
                prepare=prepare,
            )
        return GatedConsumer(
            HUB_CONSUMER,
            topics,
            self,
            retry_backoff=backoff,
            batch_size=batch_size,
            batch_handler=self.fan_out,
            prepare=prepare,
            event_types=carried,  # the runtime consults wants() only for a consumer naming its types
            gate=self.subscribed.wants,
        )

    async def __call__(self, envelope: Envelope, uow: UnitOfWork) -> None:
        """One event (the runtime's careful path, after a failed batch)."""
        await self.fan_out([envelope], uow)

    async def prepare(self, events: Sequence[tuple[Delivery, Envelope]]) -> DirectOutcomes | None:
        """The direct path, before the transaction: POST what can go now (see the module docstring).

        Reads (in a snapshot, no lock held during HTTP) which events are new to the hub, the
        subscriptions and the entities with deliveries queued; a queued entity's events are not
        sent here, so a listener never gets an entity's events out of order.
        """
        direct, database = self.direct, self._database
        if direct is None or database is None or not direct.ready:
            return None
        wanted = self._by_api([(envelope, delivery) for delivery, envelope in events])
        if not wanted:
            return None
        bodies: dict[str, Mapping[str, Any]] = {}  # parsed once per event, kept for the transaction
        async with database.snapshot() as tx:
            ids = list(dict.fromkeys(envelope.event_id for _, envelope in events))
            seen = await Inbox().seen_many(tx, HUB_CONSUMER, ids, postgresql=self._postgresql)
            plan: DirectPlan = []
            for api, api_events in wanted.items():
                for subscription in await subscriptions_of(tx, api):
                    if direct.degraded(subscription.id):
                        continue
                    fresh = [
                        (envelope, delivery)
                        for envelope, delivery in api_events
                        if envelope.event_id not in seen
                        and _wanted_by(subscription.query, envelope, delivery, bodies)
                    ]
                    queue = queue_name(api, subscription.id)
                    if fresh and (chains := await self._sendable_chains(tx, queue, fresh)):
                        plan.append((subscription, queue, chains))
        return await direct.deliver_now(plan, bodies) if plan else None

    async def _sendable_chains(
        self, tx: Transaction, queue: str, events: Sequence[tuple[Envelope, Delivery]]
    ) -> list[Chain]:
        """The events to send now, as one chain per entity; none of an entity with deliveries queued."""
        keys = list(dict.fromkeys(envelope.entity_key for envelope, _ in events))
        queued = await self._lot.blocked_keys(tx, queue, keys, postgresql=False)  # a snapshot: no lock
        chains: dict[str, Chain] = {}
        for envelope, delivery in events:
            if envelope.entity_key not in queued:
                chains.setdefault(envelope.entity_key, []).append((envelope, delivery))
        return list(chains.values())

    def _by_api(
        self, events: Iterable[tuple[Envelope, Delivery]]
    ) -> dict[str, list[tuple[Envelope, Delivery]]]:
        wanted: dict[str, list[tuple[Envelope, Delivery]]] = {}
        for envelope, delivery in events:
            for api in dict.fromkeys(
                r.api for r in self.routes if r.carries(delivery.message.topic, envelope.event_type)
            ):
                wanted.setdefault(api, []).append((envelope, delivery))
        return wanted

    async def fan_out(self, envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
        """A batch of events: subscriptions read once per API, blocked entities once per listener."""
        deliveries = uow.deliveries or (uow.delivery,)
        wanted = self._by_api(zip(envelopes, deliveries, strict=True))
        direct = uow.prepared if isinstance(uow.prepared, DirectOutcomes) else None
        bodies = direct.bodies if direct is not None else {}
        queued = False
        for api, events in wanted.items():
            for subscription in await subscriptions_of(uow.tx, api):
                matching = [
                    (envelope, delivery)
                    for envelope, delivery in events
                    if _wanted_by(subscription.query, envelope, delivery, bodies)
                ]
                if matching:
                    queued |= await self._enqueue(uow.tx, queue_name(api, subscription.id), matching, direct)
        if queued:
            uow.tx.on_commit(self._wake)

    async def _enqueue(
        self,
        tx: Transaction,
        queue: str,
        events: Sequence[tuple[Envelope, Delivery]],
        direct: DirectOutcomes | None = None,
    ) -> bool:
        """Park one delivery per event not already delivered directly; whether any was parked.

        A head is due now, or carries the direct attempt's failure (a retry with backoff, or
        dead); an event behind an earlier one of its entity waits blocked.
        """
        if direct is not None:
            events = [(e, d) for e, d in events if (queue, e.event_id) not in direct.delivered]
            if not events:
                return False
        keys = list(dict.fromkeys(envelope.entity_key for envelope, _ in events))
        behind = await self._lot.blocked_keys(tx, queue, keys, postgresql=self._postgresql)
        parked = False
        for envelope, delivery in events:
            error = direct.failed.get((queue, envelope.event_id)) if direct is not None else None
            if envelope.entity_key in behind:
                status, failure, next_at = Status.BLOCKED, None, None
            elif error is not None:
                failure = Failure.of(error)
                status, next_at = direct.after_failure(error, failure) if direct else (Status.DEAD, None)
            else:
                status, failure, next_at = Status.RETRYING, None, now()
            await self._lot.park(
                tx, queue, delivery, entity_key=envelope.entity_key, status=status, failure=failure,
                next_attempt_at=next_at,
            )  # fmt: skip
            if status is Status.DEAD and direct is not None:
                tx.on_commit(direct.count_dead)
            behind.add(envelope.entity_key)  # the next event of this entity in the batch waits for it
            parked = True
        return parked


def _wanted_by(
    query: str, envelope: Envelope, delivery: Delivery, bodies: dict[str, Mapping[str, Any]]
) -> bool:
    """Whether the subscription ``query`` takes this event; the body is parsed only if it must be."""
    compiled = _compiled(query)
    if _on_event_type_only(query):  # the envelope's type IS the body's eventType (decoded from it)
        return compiled.matches({"eventType": envelope.event_type})
    return compiled.matches(_body(bodies, envelope, delivery))


@lru_cache(maxsize=4096)
def _on_event_type_only(query: str) -> bool:
    return all(condition.path == ("eventType",) for condition in _compiled(query).conditions)


def _body(cache: dict[str, Mapping[str, Any]], envelope: Envelope, delivery: Delivery) -> Mapping[str, Any]:
    body = cache.get(envelope.event_id)
    if body is None:
        body = cache[envelope.event_id] = orjson.loads(delivery.message.value)
    return body


async def subscriptions_of(tx: Transaction, api: str) -> list[Subscription]:
    """The hub subscriptions of ``api``, read in ``tx`` (a subscription made before the event counts)."""
    rows = await tx.fetchall(
        "SELECT id, callback, query, secret, created_at FROM tmf_hub_subscription WHERE api = ?", (api,)
    )
    return [Subscription(*row) for row in rows]


# --- sending -----------------------------------------------------------------------------------


class ListenerUnavailable(TransientError):
    """The listener could not take the delivery now (connection, timeout, 408, 429, 5xx): retried."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ListenerRejected(PermanentError):
    """The listener refused the delivery for good (3xx, 4xx other than 408/429): dead-lettered."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class CallbackRefused(PermanentError):
    """The SSRF guard refused the callback at delivery time: dead-lettered."""


class UnsendableDelivery(PermanentError):
    """The request cannot be made as asked (a header with a line break, a URL with no host): dead-lettered."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a listener answered: status, reason, its Retry-After, the start of its body."""

    status: int
    reason: str = ""
    retry_after: str | None = None
    text: str = ""


class WebhookClient(ABC):
    """The HTTP/1.1 client under :class:`WebhookSender`: POSTs to an address the guard accepted.

    One implementation per HTTP library (:class:`Http1WebhookClient`, the default;
    :class:`AiohttpWebhookClient`; :class:`HttpxWebhookClient`, whose transports tests
    inject); all pass the same contract tests. A client follows no redirect (it would go
    past the guard), uses no proxy from the environment, and keeps connections alive per
    listener.
    """

    @abstractmethod
    async def post(self, url: str, address: str | None, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``url``, connecting to ``address`` — never to what the host resolves to now.

        ``address`` is the IP the guard accepted for the URL's host (``None``: the host
        is itself a literal address). TLS, the Host header and the keep-alive pool still
        go by the URL's host name. Returns the answer whatever its status; raises
        :class:`ListenerUnavailable` when none came (connect error, timeout, broken connection).
        """

    @abstractmethod
    async def close(self) -> None:
        """Close the pooled connections; the client is not used again."""


class HttpxWebhookClient(WebhookClient):
    """``httpx``: the URL's host is replaced by the checked address, Host header and SNI kept."""

    def __init__(self, options: DeliveryOptions, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        limits = httpx.Limits(
            max_connections=options.max_in_flight, max_keepalive_connections=options.max_in_flight
        )
        self.client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits, retries=0),
            timeout=httpx.Timeout(options.timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=no_cookie_jar(),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, address: str | None, body: bytes, headers: Mapping[str, str]) -> Answer:
        pinned, extra, extensions = _pinned(url, address)
        request = self.client.build_request(
            "POST", pinned, content=body, headers={**headers, **extra}, extensions=extensions
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ListenerUnavailable(f"POST {url} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ListenerUnavailable(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
        try:
            text = await self._read_some(response)
        finally:
            await response.aclose()
        return Answer(response.status_code, response.reason_phrase, response.headers.get("Retry-After"), text)

    async def _read_some(self, response: httpx.Response) -> str:
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.options.max_response_bytes:
                    break  # the connection is dropped rather than drained
        except httpx.StreamConsumed:
            chunks = [response.content]  # a transport that answered in memory (tests, mounts)
        except httpx.HTTPError:
            pass  # the status is what counts; a broken body only shortens the detail
        return _detail(b"".join(chunks))


def _pinned(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` with its host replaced by ``address``; the Host header and TLS server name to keep."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"Host": parts.netloc}, extensions


class _PinnedResolver(AbstractResolver):
    """aiohttp's resolver: a host resolves to the address the guard last accepted for it, nothing else."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        address = self.addresses.get(host)
        if address is None:  # a connection the sender did not check first: refuse to make it
            raise OSError(f"no checked address for {host!r}")
        ip = ipaddress.ip_address(address)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        self.addresses.clear()


class AiohttpWebhookClient(WebhookClient):
    """``aiohttp`` (C HTTP parser, per-host keep-alive pool): the default client.

    The URL is sent as written, so the pool, the Host header, SNI and certificate checks
    go by the host name; the connector's resolver answers only with the checked address.
    The session is made on first use, on the running loop.
    """

    def __init__(self, options: DeliveryOptions) -> None:
        self.options = options
        self._resolver = _PinnedResolver()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.options.max_in_flight,
            limit_per_host=0,  # the worker bounds each listener itself
            resolver=self._resolver,
            use_dns_cache=False,  # every new connection asks the resolver, so goes to a checked address
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.options.timeout),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
            cookie_jar=aiohttp.DummyCookieJar(),  # as no_cookie_jar, for aiohttp
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, address: str | None, body: bytes, headers: Mapping[str, str]) -> Answer:
        if self._session is None:
            self._session = self._open()
        if address is not None:
            self._resolver.addresses[urlsplit(url).hostname or ""] = address
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                text = await self._read_some(response)
                return Answer(
                    response.status, response.reason or "", response.headers.get("Retry-After"), text
                )
        except TimeoutError as exc:
            raise ListenerUnavailable(f"POST {url} timed out: {type(exc).__name__}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ListenerUnavailable(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc

    async def _read_some(self, response: aiohttp.ClientResponse) -> str:
        chunks, size = [], 0
        try:
            while size < self.options.max_response_bytes:
                chunk = await response.content.read(self.options.max_response_bytes - size)
                if not chunk:
                    break  # read to the end: the connection goes back to the pool
                chunks.append(chunk)
                size += len(chunk)
        except aiohttp.ClientPayloadError:
            pass  # the status is what counts; a broken body only shortens the detail
        return _detail(b"".join(chunks))


class Http1WebhookClient(WebhookClient):
    """Strowger's lean HTTP/1.1 client (:mod:`strowger.tmf.http1`, on httptools): the default.

    About a quarter of aiohttp's CPU per POST (docs/benchmarks.md, Hub, session 19). It
    connects only to the address given (it resolves no name), keeps connections alive per
    listener and reads at most ``max_response_bytes`` of an answer.
    """

    def __init__(self, options: DeliveryOptions, ssl_context: ssl.SSLContext | None = None) -> None:
        self.options = options
        self.http = Http1Client(
            timeout=options.timeout,
            max_body=options.max_response_bytes,
            max_idle=options.max_in_flight,
            ssl_context=ssl_context,
        )

    async def close(self) -> None:
        await self.http.close()

    async def post(self, url: str, address: str | None, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            response = await self.http.post(url, address, body, headers)
        except Http1Timeout as exc:
            raise ListenerUnavailable(f"POST {url} timed out: {exc}") from exc
        except Http1Error as exc:
            raise ListenerUnavailable(f"POST {url} failed: {exc}") from exc
        except InvalidRequest as exc:
            raise UnsendableDelivery(f"POST {url} cannot be sent: {exc}") from exc
        return Answer(
            response.status, response.reason, response.headers.get("retry-after"), _detail(response.body)
        )


def _detail(body: bytes) -> str:
    return body[:200].decode("utf-8", errors="replace").strip()


class WebhookSender:
    """POSTs notification bodies to callbacks: guard checked, address pinned, outcome classified.

    ``client`` is the HTTP client (default :class:`Http1WebhookClient`); ``transport``
    is the shorthand for an :class:`HttpxWebhookClient` on that httpx transport (tests).
    The guard's verdict on a host is reused for ``options.address_ttl`` seconds.
    """

    def __init__(
        self,
        guard: CallbackGuard,
        options: DeliveryOptions = DeliveryOptions(),
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        client: WebhookClient | None = None,
    ) -> None:
        self.guard = guard
        self.options = options
        if client is None:
            client = HttpxWebhookClient(options, transport) if transport else Http1WebhookClient(options)
        self.client = client
        self._checked: dict[tuple[str, str, int | None], tuple[float, str | None]] = {}
        self._by_callback: dict[str, tuple[float, str | None]] = {}

    async def close(self) -> None:
        await self.client.close()

    async def send(self, callback: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body``; the 2xx status, or ListenerUnavailable / ListenerRejected / CallbackRefused."""
        address = await self._address(callback)
        answer = await self.client.post(
            callback,
            address,
            body,
            {"Content-Type": "application/json", "User-Agent": self.options.user_agent, **headers},
        )
        return self._classify(callback, answer)

    def _classify(self, callback: str, answer: Answer) -> int:
        status = answer.status
        if 200 <= status < 300:
            return status
        detail = f"POST {callback} answered {status} {answer.reason}" + (
            f": {answer.text}" if answer.text else ""
        )
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(answer.retry_after, self.options.max_retry_after)
            raise ListenerUnavailable(detail, status=status, retry_after=retry_after)
        raise ListenerRejected(detail, status=status)

    async def _address(self, callback: str) -> str | None:
        """The address to connect to (None: the host is a literal one), checked by the guard lately."""
        known = self._by_callback.get(callback)
        if known is not None and known[0] > time.monotonic():
            return known[1]  # the same callback again: no URL parsing per delivery
        address = await self._address_of(callback)
        if len(self._by_callback) >= 4096:
            self._by_callback.clear()  # callbacks of removed subscriptions do not pile up
        self._by_callback[callback] = (time.monotonic() + self.options.address_ttl, address)
        return address

    async def _address_of(self, callback: str) -> str | None:
        parts = urlsplit(callback)
        host = parts.hostname or ""
        key = (parts.scheme, host, parts.port)
        cached = self._checked.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        addresses = await self._check(callback)
        address = None if is_ip_literal(host) else addresses[0]
        self._checked[key] = (time.monotonic() + self.options.address_ttl, address)
        return address

    async def _check(self, callback: str) -> list[str]:
        try:
            return await self.guard.check(callback)
        except UnresolvableCallback as exc:
            raise ListenerUnavailable(str(exc)) from exc  # DNS may answer again later
        except UnsafeCallback as exc:
            raise CallbackRefused(str(exc)) from exc


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is ignored), capped."""
    if value is None:
        return None
    try:
        return min(max(0.0, float(value.strip())), cap)
    except ValueError:
        return None


def delivery_headers(
    headers: Mapping[str, str], body: bytes, secret: str | None, attempt: int
) -> dict[str, str]:
    """The headers of one delivery attempt: event id (for the listener's dedup), correlation, signature."""
    out = {
        EVENT_ID_HEADER: headers.get(Header.EVENT_ID, ""),
        EVENT_TYPE_HEADER: headers.get(Header.EVENT_TYPE, ""),
        ATTEMPT_HEADER: str(attempt),
    }
    if headers.get(Header.CORRELATION_ID):
        out[CORRELATION_ID_HEADER] = headers[Header.CORRELATION_ID]
    if headers.get(Header.TRACEPARENT):
        out["traceparent"] = headers[Header.TRACEPARENT]
    if secret:
        out[SIGNATURE_HEADER] = sign(secret, body)  # fresh timestamp per attempt
    return out


# --- the queue ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """One claimed delivery: a notification for one subscription."""

    id: int
    queue: str
    entity_key: str
    event_id: str
    event_type: str
    headers: Mapping[str, str]
    body: bytes
    attempts: int  # failed attempts so far
    subscription: Subscription | None  # None: unsubscribed since (the queue is dropped)

    @property
    def api(self) -> str:
        return parse_queue_name(self.queue)[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery: PendingDelivery
    error: BaseException | None = None  # None: delivered (or dropped)

    @property
    def retry_after(self) -> float | None:
        return self.error.retry_after if isinstance(self.error, ListenerUnavailable) else None


_CLAIMED = "id, consumer, entity_key, event_id, event_type, headers, value, attempts"


class DeliveryQueue:
    """The hub's side of the ``parked`` table: claim due heads, settle outcomes."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def _postgresql(self) -> bool:
        return self.database.kind == "postgresql"

    async def claim(
        self, limit: int, lease: float, room: Callable[[str], int] = lambda queue: 1 << 30
    ) -> list[PendingDelivery]:
        """Lease up to ``limit`` due heads, at most ``room(queue)`` of each listener's queue."""
        return (await self.settle_and_claim((), (), limit, lease, room))[1]

    async def settle(self, outcomes: Sequence[Outcome], backoff: Sequence[float]) -> list[Status]:
        """Record what happened to each delivery; the status each failed one has now (dead or retrying)."""
        return (await self.settle_and_claim(outcomes, backoff, 0, 0.0))[0]

    async def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        backoff: Sequence[float],
        limit: int,
        lease: float,
        room: Callable[[str], int] = lambda queue: 1 << 30,
    ) -> tuple[list[Status], list[PendingDelivery]]:
        """:meth:`settle` then :meth:`claim`, in one transaction (the worker's round: one commit).

        Settling first lets the claim take the deliveries it just made due.
        """
        async with self.database.transaction() as tx:
            statuses = await self._settle(tx, outcomes, backoff) if outcomes else []
            claimed = await self._claim(tx, limit, lease, room) if limit > 0 else []
        return statuses, claimed

    async def _claim(
        self, tx: Transaction, limit: int, lease: float, room: Callable[[str], int]
    ) -> list[PendingDelivery]:
        lock = " FOR UPDATE SKIP LOCKED" if self._postgresql else ""
        candidates = await tx.fetchall(
            "SELECT id, consumer FROM parked WHERE status = ? AND next_attempt_at <= ? "  # noqa: S608
            f"AND consumer LIKE ? ORDER BY next_attempt_at, id LIMIT ?{lock}",
            (Status.RETRYING.value, now(), f"{QUEUE_PREFIX}%", limit),
        )
        taken: Counter[str] = Counter()
        chosen = []
        for row_id, queue in candidates:
            if taken[queue] < room(queue):
                taken[queue] += 1
                chosen.append(int(row_id))
        if not chosen:
            return []
        rows = await tx.fetchall(
            f"UPDATE parked SET next_attempt_at = ? WHERE id IN ({_marks(chosen)}) RETURNING {_CLAIMED}",  # noqa: S608
            (now() + lease, *chosen),
        )
        subscriptions = {queue: await _subscription(tx, queue) for queue in taken}
        return [_pending(row, subscriptions[row[1]]) for row in rows]

    async def _settle(
        self, tx: Transaction, outcomes: Sequence[Outcome], backoff: Sequence[float]
    ) -> list[Status]:
        delivered = [o.delivery for o in outcomes if o.error is None and o.delivery.subscription]
        dropped = {o.delivery.queue for o in outcomes if o.delivery.subscription is None}
        statuses = []
        if delivered:
            await self._resolve(tx, delivered)
        for queue in dropped:
            await tx.execute("DELETE FROM parked WHERE consumer = ?", (queue,))
        for outcome in outcomes:
            if outcome.error is not None and outcome.delivery.subscription is not None:
                statuses.append(await self._failed(tx, outcome, backoff))
        return statuses

    async def _resolve(self, tx: Transaction, delivered: Sequence[PendingDelivery]) -> None:
        """Drop delivered heads and make the next delivery of each (listener, entity) due now."""
        ids = [d.id for d in delivered]
        await tx.execute(f"DELETE FROM parked WHERE id IN ({_marks(ids)})", ids)  # noqa: S608
        # Each delivered (listener, entity) pair: its oldest row becomes the head if it is blocked
        # (one indexed lookup per pair on parked_sequence).
        pairs = dict.fromkeys((d.queue, d.entity_key) for d in delivered)
        moment = now()
        await tx.executemany(
            "UPDATE parked SET status = ?, next_attempt_at = ? WHERE status = ? AND id = "
            "(SELECT MIN(id) FROM parked WHERE consumer = ? AND entity_key = ?)",
            [(Status.RETRYING.value, moment, Status.BLOCKED.value, queue, key) for queue, key in pairs],
        )

    async def _failed(self, tx: Transaction, outcome: Outcome, backoff: Sequence[float]) -> Status:
        assert outcome.error is not None
        failure = Failure.of(outcome.error)
        attempts = outcome.delivery.attempts + 1
        if not is_transient(outcome.error) or attempts > len(backoff):
            status, next_at = Status.DEAD, None
        else:
            delay = max(backoff[attempts - 1], outcome.retry_after or 0.0)
            status, next_at = Status.RETRYING, failure.at + delay
        await tx.execute(
            "UPDATE parked SET status = ?, attempts = ?, error_type = ?, error_message = ?, traceback = ?, "
            "first_failed_at = COALESCE(first_failed_at, ?), last_failed_at = ?, next_attempt_at = ? "
            "WHERE id = ? AND status = ?",
            (status.value, attempts, failure.error_type, failure.message, failure.traceback, failure.at,
             failure.at, next_at, outcome.delivery.id, Status.RETRYING.value),
        )  # fmt: skip
        return status

    async def next_due_at(self) -> float | None:
        """When the earliest waiting delivery is due (epoch seconds), or None."""
        row = await self.database.fetchone(
            "SELECT MIN(next_attempt_at) FROM parked WHERE status = ? AND consumer LIKE ?",
            (Status.RETRYING.value, f"{QUEUE_PREFIX}%"),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def promote_stranded(self) -> int:
        """Make blocked deliveries with nothing before them heads (a safety net); returns how many."""
        async with self.database.transaction() as tx:
            return await tx.execute(
                "UPDATE parked SET status = ?, next_attempt_at = ? WHERE status = ? AND consumer LIKE ? "
                "AND NOT EXISTS (SELECT 1 FROM parked q WHERE q.consumer = parked.consumer "
                "AND q.entity_key = parked.entity_key AND q.id < parked.id)",
                (Status.RETRYING.value, now(), Status.BLOCKED.value, f"{QUEUE_PREFIX}%"),
            )

    async def counts(self) -> dict[str, int]:
        """Queued hub deliveries per status (``retrying`` includes first attempts not yet made)."""
        rows = await self.database.fetchall(
            "SELECT status, COUNT(*) FROM parked WHERE consumer LIKE ? GROUP BY status",
            (f"{QUEUE_PREFIX}%",),
        )
        return {str(status): int(count) for status, count in rows}


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


async def _subscription(tx: Transaction, queue: str) -> Subscription | None:
    api, subscription_id = parse_queue_name(queue)
    row = await tx.fetchone(
        "SELECT id, callback, query, secret, created_at FROM tmf_hub_subscription WHERE api = ? AND id = ?",
        (api, subscription_id),
    )
    return Subscription(*row) if row else None


def _pending(row: Row, subscription: Subscription | None) -> PendingDelivery:
    row_id, queue, entity_key, event_id, event_type, headers, value, attempts = row
    return PendingDelivery(
        id=int(row_id),
        queue=queue,
        entity_key=entity_key,
        event_id=event_id,
        event_type=event_type,
        headers=orjson.loads(headers),
        body=bytes(value),
        attempts=int(attempts),
        subscription=subscription,
    )


# --- the direct path ---------------------------------------------------------------------------


@dataclass
class DirectOutcomes:
    """What the direct path did with one batch, keyed by (queue, event id): delivered, or the error."""

    backoff: tuple[float, ...]
    stats: DeliveryStats
    bodies: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # event id → parsed body
    delivered: set[tuple[str, str]] = field(default_factory=set)
    failed: dict[tuple[str, str], BaseException] = field(default_factory=dict)

    def after_failure(self, error: BaseException, failure: Failure) -> tuple[Status, float | None]:
        """How a first attempt that failed is queued: a retry after the backoff, or dead."""
        if not is_transient(error) or not self.backoff:
            return Status.DEAD, None
        retry_after = error.retry_after if isinstance(error, ListenerUnavailable) else None
        return Status.RETRYING, failure.at + max(self.backoff[0], retry_after or 0.0)

    def count_dead(self) -> None:
        self.stats.dead += 1


# --- the worker --------------------------------------------------------------------------------


@dataclass
class DeliveryStats:
    """Counters since the worker started."""

    keep_latencies: bool = False
    delivered: int = 0
    failed: int = 0  # attempts that failed (each retry counts)
    dead: int = 0
    dropped: int = 0  # deliveries of subscriptions removed meanwhile
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds per POST, if kept


class DeliveryWorker:
    """Claims due deliveries, POSTs them concurrently, records outcomes; runs until cancelled."""

    def __init__(
        self,
        database: Database,
        guard: CallbackGuard,
        options: DeliveryOptions = DeliveryOptions(),
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        stranded_interval: float = 5.0,
    ) -> None:
        self.database = database
        self.guard = guard
        self.options = options
        self.queue = DeliveryQueue(database)
        self.stats = DeliveryStats()
        self._transport = transport
        self._stranded_interval = stranded_interval
        self._wakeup = asyncio.Event()
        self._in_flight: Counter[str] = Counter()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._sending: set[asyncio.Task[None]] = set()
        self._sender: WebhookSender | None = None  # while running: the direct path shares it
        self._degraded: dict[str, float] = {}  # subscription id → until (monotonic): queue only

    def wake(self) -> None:
        """Look for due deliveries now (called when a fan-out commits)."""
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    async def run(self) -> None:
        await self.database.create_tables(PARKED_TABLES, HUB_TABLES, HUB_DELIVERY_TABLES)
        sender = WebhookSender(self.guard, self.options, self._transport)
        self._sender = sender
        try:
            await self._pump(sender)
        finally:
            self._sender = None
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
            self._sending.clear()
            self._in_flight.clear()
            await sender.close()  # leased deliveries not settled are due again when their lease ends

    async def _pump(self, sender: WebhookSender) -> None:
        """Rounds of one transaction each: settle the finished deliveries, claim as many more."""
        loop = asyncio.get_running_loop()
        next_stranded_check = loop.time()
        # While busy, claim only when a quarter of the slots is free: each round's transaction
        # then carries several deliveries instead of one.
        least = max(1, min(self.options.batch_size, self.options.max_in_flight) // 4)
        while True:
            self._wakeup.clear()
            outcomes = self._finished()
            for outcome in outcomes:
                self._release(outcome.delivery.queue)
            free = self.options.max_in_flight - self.in_flight
            limit = min(free, self.options.batch_size) if free >= least or not self.in_flight else 0
            if outcomes or limit:
                statuses, claimed = await self.queue.settle_and_claim(
                    outcomes, self.options.backoff, limit, self.options.lease, self._room
                )
                self._count(outcomes, statuses)
                for delivery in claimed:
                    self._dispatch(sender, delivery)
                if claimed and len(claimed) == limit:
                    continue  # there may be more due right now
            if loop.time() >= next_stranded_check:
                await self.queue.promote_stranded()
                next_stranded_check = loop.time() + self._stranded_interval
            if self._outcomes.empty():
                await self._idle(busy=bool(self.in_flight))

    @property
    def ready(self) -> bool:
        """Whether the direct path can send now (the worker runs, so its client is open)."""
        return self._sender is not None and self.options.direct

    def degraded(self, subscription_id: str) -> bool:
        """Whether the listener failed or was slow lately: its deliveries go through the queue."""
        until = self._degraded.get(subscription_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._degraded[subscription_id]
        return False

    def _degrade(self, subscription_id: str) -> None:
        self._degraded[subscription_id] = time.monotonic() + self.options.degraded_for

    async def deliver_now(
        self,
        plan: DirectPlan,
        bodies: dict[str, Mapping[str, Any]] | None = None,
    ) -> DirectOutcomes:
        """POST each chain's events in order (one entity's events, first attempts) within the budget.

        ``plan`` is (subscription, queue, chains) per listener; at most ``per_listener`` chains
        of a listener run at once (fewer when many listeners share ``max_in_flight``). A chain
        stops at its first failure; what the budget cut off (a POST in flight included) has no
        outcome, so the fan-out queues it. A listener whose POST had then been waiting for half
        the budget or more is marked slow; one cut off only because the batch was large is not.
        """
        outcomes = DirectOutcomes(self.options.backoff, self.stats, bodies if bodies is not None else {})
        sender = self._sender
        if sender is None or not plan:
            return outcomes
        share = max(1, self.options.max_in_flight // len(plan))
        senders: list[tuple[str, asyncio.Task[None], list[float]]] = []
        for subscription, queue, chains in plan:
            pending = iter(chains)
            for _ in range(min(self.options.per_listener, len(chains), share)):
                posting: list[float] = []  # when this sender's POST in flight started
                task = asyncio.create_task(
                    self._send_chains(sender, subscription, queue, pending, outcomes, posting)
                )
                senders.append((subscription.id, task, posting))
        loop = asyncio.get_running_loop()
        _, late = await asyncio.wait([task for _, task, _ in senders], timeout=self.options.direct_budget)
        cut = loop.time()
        for subscription_id, task, posting in senders:
            if task in late:
                task.cancel()
                if posting and cut - posting[0] >= self.options.direct_budget / 2:
                    self._degrade(subscription_id)  # its answer ran late, not just the batch's size
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return outcomes

    async def _send_chains(
        self,
        sender: WebhookSender,
        subscription: Subscription,
        queue: str,
        chains: Iterator[Chain],
        outcomes: DirectOutcomes,
        posting: list[float],
    ) -> None:
        loop = asyncio.get_running_loop()
        for chain in chains:  # shared by this listener's senders: each chain is taken once
            if self.degraded(subscription.id):
                return  # it failed meanwhile: the rest goes through the queue, not another attempt each
            for envelope, delivery in chain:
                message = delivery.message
                headers = delivery_headers(message.headers, message.value, subscription.secret, 1)
                started = loop.time()
                posting[:] = [started]
                try:
                    await sender.send(subscription.callback, message.value, headers)
                except Exception as exc:  # classified errors, and bugs: queued with the failure
                    outcomes.failed[(queue, envelope.event_id)] = exc
                    self.stats.failed += 1
                    self._degrade(subscription.id)
                    log.warning(
                        "hub delivery %s of %s to subscription %s failed (direct attempt): %s",
                        envelope.event_type,
                        envelope.entity_key,
                        subscription.id,
                        exc,
                    )
                    break  # the entity's later events are queued behind this one
                posting.clear()
                outcomes.delivered.add((queue, envelope.event_id))
                self.stats.delivered += 1
                if self.stats.keep_latencies:
                    self.stats.latencies.append(loop.time() - started)

    def _finished(self) -> list[Outcome]:
        batch: list[Outcome] = []
        while not self._outcomes.empty() and len(batch) < 1000:
            batch.append(self._outcomes.get_nowait())
        return batch

    def _release(self, queue: str) -> None:
        self._in_flight[queue] -= 1
        if self._in_flight[queue] <= 0:
            del self._in_flight[queue]

    def _room(self, queue: str) -> int:
        return self.options.per_listener - self._in_flight[queue]

    async def _idle(self, *, busy: bool) -> None:
        """Until a delivery finishes, a fan-out commits, or the next delivery is due."""
        delay = self.options.poll_interval
        if not busy:
            next_at = await self.queue.next_due_at()
            if next_at is not None:
                delay = min(delay, max(0.01, next_at - now()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancel (3.11)
                await self._wakeup.wait()

    def _dispatch(self, sender: WebhookSender, delivery: PendingDelivery) -> None:
        self._in_flight[delivery.queue] += 1
        task = asyncio.create_task(self._send(sender, delivery))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, sender: WebhookSender, delivery: PendingDelivery) -> None:
        subscription = delivery.subscription
        error: BaseException | None = None
        if subscription is not None:
            headers = delivery_headers(
                delivery.headers, delivery.body, subscription.secret, delivery.attempts + 1
            )
            started = asyncio.get_running_loop().time()
            try:
                await sender.send(subscription.callback, delivery.body, headers)
            except Exception as exc:  # classified errors, and bugs (retried, then dead with traceback)
                error = exc
            if self.stats.keep_latencies:
                self.stats.latencies.append(asyncio.get_running_loop().time() - started)
        self._outcomes.put_nowait(Outcome(delivery, error))
        self._wakeup.set()

    def _count(self, batch: Iterable[Outcome], statuses: Sequence[Status]) -> None:
        for outcome in batch:
            delivery = outcome.delivery
            if delivery.subscription is None:
                self.stats.dropped += 1
            elif outcome.error is None:
                self.stats.delivered += 1
            else:
                self.stats.failed += 1
                self._degrade(delivery.subscription.id)
                log.warning(
                    "hub delivery %s of %s to subscription %s failed (attempt %d): %s",
                    delivery.event_type,
                    delivery.entity_key,
                    delivery.subscription.id,
                    delivery.attempts + 1,
                    outcome.error,
                )
        self.stats.dead += sum(1 for status in statuses if status is Status.DEAD)


# --- wiring ------------------------------------------------------------------------------------


def install(
    platform: Platform,
    apis: Sequence[TmfApi],
    options: DeliveryOptions = DeliveryOptions(),
    *,
    extra_routes: Sequence[HubRoute] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> DeliveryWorker:
    """Deliver the events of ``apis`` to their hub subscribers: the fan-out consumer and the worker."""
    settings = platform.settings
    options = replace(options, direct=settings.hub_direct_delivery, direct_budget=settings.hub_direct_budget)
    guard = CallbackGuard.from_settings(settings.hub_allowed_networks)
    worker = DeliveryWorker(platform.database, guard, options, transport=transport)
    routes = [*(HubRoute.of(api) for api in apis), *extra_routes]
    fan_out = HubFanOut(
        routes,
        postgresql=platform.database.kind == "postgresql",
        wake=worker.wake,
        database=platform.database,
        direct=worker,
    )
    platform.add_tables(PARKED_TABLES, HUB_TABLES, HUB_DELIVERY_TABLES)
    platform.add_consumer(fan_out.consumer(backoff=platform.settings.retry_backoff))
    platform.add_task("hub-delivery:worker", worker.run)
    return worker
