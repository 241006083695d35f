"""The webhook sender without a network: outcome classification, address pinning, headers."""

from __future__ import annotations

import ipaddress
from typing import cast

import httpx
import pytest

from strowger.components.catalog.api import CATALOG_API
from strowger.events.envelope import Envelope, encode
from strowger.store.db import Database
from strowger.store.deadletters import Failure, Status
from strowger.tmf.delivery import (
    CORRELATION_ID_HEADER,
    EVENT_ID_HEADER,
    CallbackRefused,
    DeliveryOptions,
    DeliveryStats,
    DeliveryWorker,
    DirectOutcomes,
    HubRoute,
    ListenerRejected,
    ListenerUnavailable,
    WebhookSender,
    delivery_headers,
    parse_queue_name,
    queue_name,
)
from strowger.tmf.hubs import SIGNATURE_HEADER, CallbackGuard, UnresolvableCallback, verify

PUBLIC = "93.184.216.34"


async def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC]


def sender(handler: httpx.MockTransport, guard: CallbackGuard | None = None) -> WebhookSender:
    return WebhookSender(guard or CallbackGuard(resolver=public_resolver), DeliveryOptions(), handler)


def answering(status: int, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, text="why"))


async def test_a_2xx_acknowledges() -> None:
    assert await sender(answering(202)).send(f"http://{PUBLIC}/cb", b"{}", {}) == 202


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_transient_statuses_are_retried(status: int) -> None:
    with pytest.raises(ListenerUnavailable) as caught:
        await sender(answering(status, {"Retry-After": "7"})).send(f"http://{PUBLIC}/cb", b"{}", {})
    assert caught.value.status == status and caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
async def test_other_statuses_are_permanent(status: int) -> None:
    with pytest.raises(ListenerRejected, match=str(status)):
        await sender(answering(status)).send(f"http://{PUBLIC}/cb", b"{}", {})


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_connection_errors_and_timeouts_are_retried(error: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ListenerUnavailable):
        await sender(httpx.MockTransport(fail)).send(f"http://{PUBLIC}/cb", b"{}", {})


async def test_the_guard_refuses_at_delivery_time() -> None:
    called = []
    transport = httpx.MockTransport(lambda request: called.append(request) or httpx.Response(204))
    with pytest.raises(CallbackRefused, match="metadata"):
        await sender(transport).send("http://169.254.169.254/latest", b"{}", {})

    async def rebinding(host: str, port: int) -> list[str]:
        return ["10.0.0.5"]  # the name now points inside

    with pytest.raises(CallbackRefused):
        await sender(transport, CallbackGuard(resolver=rebinding)).send("http://hooks.example/cb", b"{}", {})
    assert called == []


async def test_an_unresolvable_host_is_retried_not_refused() -> None:
    async def nothing(host: str, port: int) -> list[str]:
        raise UnresolvableCallback("no such host")

    with pytest.raises(ListenerUnavailable):
        await sender(answering(204), CallbackGuard(resolver=nothing)).send("http://x.example/cb", b"{}", {})


async def test_a_named_host_is_connected_at_the_checked_address() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(204))
    await sender(transport).send("https://hooks.example:8443/cb?x=1", b"{}", {})
    (request,) = seen
    assert request.url.host == PUBLIC and request.url.port == 8443 and request.url.path == "/cb"
    assert request.headers["Host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"


def test_delivery_headers_carry_ids_and_a_signature_only_with_a_secret() -> None:
    envelope = Envelope(event_type="E", payload={"x": {"id": "1"}}, entity_key="1", correlation_id="c-1")
    message = encode(envelope, "t")
    signed = delivery_headers(message.headers, message.value, "k", attempt=2)
    assert signed[EVENT_ID_HEADER] == envelope.event_id and signed[CORRELATION_ID_HEADER] == "c-1"
    assert verify("k", message.value, signed[SIGNATURE_HEADER])
    assert SIGNATURE_HEADER not in delivery_headers(message.headers, message.value, None, attempt=1)


def test_routes_and_queue_names() -> None:
    route = HubRoute.of(CATALOG_API)
    assert route.carries(CATALOG_API.topic, "ProductOfferingStateChangeEvent")
    assert not route.carries(CATALOG_API.topic, "CatalogStateChangeEvent")  # not emitted for catalog
    assert not route.carries("bss.ordering.events", "ProductOfferingCreateEvent")
    assert parse_queue_name(queue_name("api", "sub-1")) == ("api", "sub-1")


def test_options_refuse_a_lease_shorter_than_the_timeout() -> None:
    with pytest.raises(ValueError, match="lease"):
        DeliveryOptions(timeout=30.0, lease=10.0)
    assert ipaddress.ip_address(PUBLIC).is_global


def test_options_refuse_a_non_positive_direct_budget() -> None:
    with pytest.raises(ValueError, match="direct_budget"):
        DeliveryOptions(direct_budget=0)
    with pytest.raises(ValueError, match="degraded_for"):
        DeliveryOptions(degraded_for=-1)


def test_a_failed_direct_attempt_is_queued_as_the_worker_would_queue_it() -> None:
    outcomes = DirectOutcomes((1.0, 5.0), DeliveryStats())
    busy = ListenerUnavailable("503", status=503, retry_after=30.0)
    down = ListenerUnavailable("refused")
    gone = ListenerRejected("410", status=410)
    failure = Failure.of(down)
    assert outcomes.after_failure(down, failure) == (Status.RETRYING, failure.at + 1.0)  # backoff[0]
    failure = Failure.of(busy)
    assert outcomes.after_failure(busy, failure) == (Status.RETRYING, failure.at + 30.0)  # Retry-After
    assert outcomes.after_failure(gone, Failure.of(gone)) == (Status.DEAD, None)  # permanent
    no_retries = DirectOutcomes((), DeliveryStats())
    assert no_retries.after_failure(down, Failure.of(down)) == (Status.DEAD, None)


def test_a_listener_is_degraded_for_a_while_after_a_failure() -> None:
    guard = CallbackGuard(resolver=public_resolver)
    worker = DeliveryWorker(cast(Database, None), guard, DeliveryOptions(degraded_for=30.0))
    assert not worker.degraded("sub-1")
    worker._degrade("sub-1")
    assert worker.degraded("sub-1") and not worker.degraded("sub-2")
    brief = DeliveryWorker(cast(Database, None), guard, DeliveryOptions(degraded_for=0.0))
    brief._degrade("sub-1")
    assert not brief.degraded("sub-1")  # degraded_for 0: never served from the queue only
    assert not worker.ready  # not running: the fan-out queues everything
