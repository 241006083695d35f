"""The listener side of TMF hubs: subscribe to an external API's hub, receive its notifications.

A :class:`Listener` names an endpoint ``POST /listener/{name}`` (TMF clients also
post to ``/listener/{name}/{eventName}``: accepted too) and the bus topic its
notifications go to. Each received notification is:

1. checked: body size and JSON, and — when the listener has a ``secret`` — the
   ``X-Strowger-Signature`` HMAC (:func:`strowger.tmf.hubs.verify`), else 401;
2. deduplicated by event id (the ``X-Event-Id`` header, else the body's
   ``eventId``, else a hash of the body) in the inbox, as consumer
   ``listener/{name}``;
3. turned into a bus event on the listener's topic through the outbox sink, in
   the same transaction as the inbox row: a hub that delivers twice (it is
   at-least-once) produces one bus event.

The answer is ``204`` for a new and for a duplicate notification alike (the
sender must stop retrying either way). :class:`HubClient` registers a
callback with an external hub (``POST {api}/hub``) and removes it
(``DELETE {api}/hub/{id}``); :func:`install` subscribes at start-up and
unsubscribes when the platform stops.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from fastapi import APIRouter, Request, Response

from strowger.errors import MalformedMessage, ServiceUnavailable
from strowger.events.envelope import Envelope
from strowger.store.db import Database
from strowger.store.inbox import INBOX_TABLES, Inbox
from strowger.store.outbox import OUTBOX_TABLES
from strowger.tmf.delivery import CORRELATION_ID_HEADER, EVENT_ID_HEADER
from strowger.tmf.errors import (
    ApiError,
    BadRequest,
    JsonResponse,
    ResourceNotFound,
    TmfRoute,
    UnsupportedMediaType,
)
from strowger.tmf.hubs import SIGNATURE_HEADER, verify
from strowger.tmf.resources import EventSink, TableGuard
from strowger.tmf.router import read_limited

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

LISTENER_PREFIX = "/listener"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    reason = "Unauthorized"


@dataclass(frozen=True, slots=True)
class Listener:
    """One listener endpoint and, optionally, the external hub it subscribes to."""

    name: str  # the path segment: POST /listener/{name}
    topic: str  # where received notifications are published
    secret: str | None = None  # verify the HMAC signature; also sent to the hub when subscribing
    hub: str | None = None  # the external API's base URL, e.g. https://crm.example/tmf-api/x/v4
    query: str = ""  # the hub subscription's query
    tolerance: float = 300.0  # seconds a signature stays valid (replay window)

    @property
    def consumer(self) -> str:
        """The inbox owner of this listener's received events."""
        return f"listener/{self.name}"


def dedup_id(headers: Mapping[str, str], body: Mapping[str, Any], raw: bytes) -> str:
    """The id a notification is deduplicated by: header, body ``eventId``, or the body's hash."""
    return (
        headers.get(EVENT_ID_HEADER)
        or str(body.get("eventId") or "")
        or f"sha256:{hashlib.sha256(raw).hexdigest()}"
    )


class NotificationReceiver:
    """Verifies, deduplicates and publishes (through the outbox) the notifications of listeners."""

    def __init__(self, listeners: Sequence[Listener], database: Database, sink: EventSink) -> None:
        self.listeners = {listener.name: listener for listener in listeners}
        self.database = database
        self.sink = sink
        self._inbox = Inbox()
        self._tables = TableGuard(database, INBOX_TABLES, OUTBOX_TABLES)

    def listener(self, name: str) -> Listener:
        listener = self.listeners.get(name)
        if listener is None:
            raise ResourceNotFound(f"no listener named {name!r}")
        return listener

    async def receive(self, listener: Listener, raw: bytes, body: Any, headers: Mapping[str, str]) -> bool:
        """Publish one notification on the listener's topic; False if it was a duplicate."""
        if listener.secret is not None:
            signature = headers.get(SIGNATURE_HEADER, "")
            if not verify(listener.secret, raw, signature, tolerance=listener.tolerance):
                raise Unauthorized("missing, invalid or expired signature")
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object (a TMF notification)", code="invalidBody")
        event_id = dedup_id(headers, body, raw)
        fields = {"event_id": event_id, "producer": listener.consumer}
        if not body.get("correlationId") and headers.get(CORRELATION_ID_HEADER):
            fields["correlation_id"] = headers[CORRELATION_ID_HEADER]
        try:
            envelope = Envelope.from_tmf(body, **fields)
        except MalformedMessage as exc:
            raise BadRequest(str(exc), code="invalidBody") from None
        await self._tables.ensure()
        async with self.database.transaction() as tx:
            if not await self._inbox.record(tx, listener.consumer, event_id):
                return False
            await self.sink.emit(tx, envelope, listener.topic)
        return True


async def read_body(request: Request, limit: int) -> bytes:
    """The raw JSON body (signatures cover the exact bytes); 415 or 413 otherwise."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type not in ("application/json", ""):
        raise UnsupportedMediaType(f"expected application/json, got {media_type!r}")
    return await read_limited(request, limit)


def listener_router(receiver: NotificationReceiver, *, max_body_bytes: int = 1 << 20) -> APIRouter:
    """``POST /listener/{name}`` (and ``/listener/{name}/{eventName}``) for the receiver's listeners."""
    router = APIRouter(prefix=LISTENER_PREFIX, route_class=TmfRoute, default_response_class=JsonResponse)

    async def receive(name: str, request: Request) -> Response:
        listener = receiver.listener(name)
        raw = await read_body(request, max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}", code="invalidBody") from None
        await receiver.receive(listener, raw, body, request.headers)
        return Response(status_code=204)

    @router.post("/{name}", tags=["listener"], summary="Receive a TMF notification", status_code=204)
    async def receive_notification(name: str, request: Request) -> Response:
        return await receive(name, request)

    @router.post(
        "/{name}/{event_name}", tags=["listener"], summary="Receive a TMF notification", status_code=204
    )
    async def receive_named_notification(name: str, event_name: str, request: Request) -> Response:
        return await receive(name, request)

    return router


# --- subscribing to an external hub ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteSubscription:
    """A subscription this platform holds at an external hub."""

    hub: str  # the API base URL
    id: str
    callback: str

    @property
    def url(self) -> str:
        return f"{self.hub.rstrip('/')}/hub/{self.id}"


class HubClient:
    """Registers and removes callbacks at external TMF hubs (``{api}/hub``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0) -> None:
        self.client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def subscribe(
        self, hub: str, callback: str, query: str = "", secret: str | None = None
    ) -> RemoteSubscription:
        """POST ``{callback, query}`` to the hub; ServiceUnavailable if it cannot be done now."""
        body: dict[str, str] = {"callback": callback, "query": query}
        if secret:
            body["secret"] = secret
        try:
            response = await self.client.post(f"{hub.rstrip('/')}/hub", json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"hub {hub} unreachable: {exc}") from exc
        if response.status_code not in (200, 201):
            raise ServiceUnavailable(
                f"hub {hub} refused the subscription: {response.status_code} {response.text}"
            )
        subscription_id = str(orjson.loads(response.content).get("id") or "")
        if not subscription_id:
            raise ServiceUnavailable(f"hub {hub} returned no subscription id")
        return RemoteSubscription(hub, subscription_id, callback)

    async def unsubscribe(self, subscription: RemoteSubscription) -> bool:
        """DELETE the subscription; True if the hub removed it (or had already forgotten it)."""
        try:
            response = await self.client.delete(subscription.url)
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 202, 204, 404)


class ListenerSubscriptions:
    """Holds this platform's subscriptions at external hubs for as long as it runs."""

    def __init__(self, listeners: Sequence[Listener], callback_base: str, client: HubClient) -> None:
        self.listeners = [listener for listener in listeners if listener.hub]
        self.callback_base = callback_base.rstrip("/")
        self.client = client
        self.held: list[RemoteSubscription] = []

    def callback(self, listener: Listener) -> str:
        return f"{self.callback_base}{LISTENER_PREFIX}/{listener.name}"

    async def subscribe_all(self) -> list[RemoteSubscription]:
        for listener in self.listeners:
            assert listener.hub is not None
            subscription = await self.client.subscribe(
                listener.hub, self.callback(listener), listener.query, listener.secret
            )
            self.held.append(subscription)
        return list(self.held)

    async def unsubscribe_all(self) -> None:
        while self.held:
            await self.client.unsubscribe(self.held.pop())

    async def hold(self) -> None:
        """Subscribe, wait until cancelled, unsubscribe (a platform task)."""
        try:
            await self.subscribe_all()
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.unsubscribe_all())


def install(
    platform: Platform,
    listeners: Sequence[Listener],
    *,
    callback_base: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NotificationReceiver:
    """Serve ``/listener/{name}`` and hold the external hub subscriptions while the platform runs.

    ``callback_base`` is this platform's public base URL, as the external hub reaches it.
    """
    receiver = NotificationReceiver(listeners, platform.database, platform.sink("listener"))
    platform.add_tables(INBOX_TABLES, OUTBOX_TABLES)
    platform.add_router(listener_router(receiver))
    if any(listener.hub for listener in listeners):
        subscriptions = ListenerSubscriptions(listeners, callback_base, HubClient(transport))
        platform.add_task("hub-listener:subscriptions", subscriptions.hold)
    return receiver
