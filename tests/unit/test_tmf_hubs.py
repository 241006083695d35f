"""Hub subscriptions: query matching, the SSRF guard and delivery signatures."""

from __future__ import annotations

import ipaddress

import pytest

from strowger.errors import ConfigError
from strowger.events.envelope import Envelope
from strowger.tmf.errors import BadRequest
from strowger.tmf.hubs import (
    CallbackGuard,
    Subscription,
    UnsafeCallback,
    matches,
    parse_hub_query,
    sign,
    verify,
)

COMPLETED = Envelope(
    event_type="ProductOrderStateChangeEvent",
    payload={"productOrder": {"id": "o1", "state": "completed", "relatedParty": [{"id": "C"}]}},
    entity_key="o1",
).to_tmf()


def subscribed(query: str) -> bool:
    return matches(Subscription(id="s", callback="https://example.com/cb", query=query), COMPLETED)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("eventType=ProductOrderStateChangeEvent", True),
        ("eventType=ProductOrderCreateEvent", False),
        ("eventType=ProductOrderCreateEvent,ProductOrderStateChangeEvent", True),
        ("eventType=ProductOrderStateChangeEvent&event.productOrder.state=completed", True),
        ("eventType=ProductOrderStateChangeEvent&event.productOrder.state=acknowledged", False),
        ("?eventType = ProductOrderStateChangeEvent", True),
        ("event.productOrder.relatedParty.id=C", True),
        ("event.productOrder.state=in%20progress", False),
    ],
)
def test_query_matching(query: str, expected: bool) -> None:
    assert subscribed(query) is expected


def test_a_query_that_is_not_conditions_is_refused() -> None:
    with pytest.raises(BadRequest):
        parse_hub_query("eventType")
    with pytest.raises(BadRequest):
        parse_hub_query("a..b=1")


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://172.16.3.4/x",
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://224.0.0.1/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://203.0.113.10/x",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pw@93.184.216.34/x",
        "http:///nohost",
    ],
)
async def test_guard_refuses_internal_and_non_http_callbacks(url: str) -> None:
    with pytest.raises(UnsafeCallback):
        await CallbackGuard(resolver=no_dns).check(url)


async def test_guard_checks_every_address_a_name_resolves_to() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.1.2.3"]  # one public, one private: refused

    with pytest.raises(UnsafeCallback):
        await CallbackGuard(resolver=resolver).check("https://hooks.example.com/cb")


async def test_guard_accepts_public_addresses_and_allow_listed_networks() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return ["93.184.216.34"]

    assert await CallbackGuard(resolver=resolver).check("https://hooks.example.com/cb") == ["93.184.216.34"]
    loopback = CallbackGuard.from_settings(["127.0.0.0/8", "::1/128"], resolver=no_dns)
    assert await loopback.check("http://127.0.0.1:9000/cb") == ["127.0.0.1"]
    assert await loopback.check("http://[::1]:9000/cb") == ["::1"]
    with pytest.raises(UnsafeCallback):
        await loopback.check("http://10.0.0.1/cb")  # still private


def test_metadata_addresses_are_refused_even_when_allow_listed() -> None:
    guard = CallbackGuard((ipaddress.ip_network("169.254.0.0/16"),))
    guard.check_address("169.254.10.10")
    with pytest.raises(UnsafeCallback):
        guard.check_address("169.254.169.254")


def test_bad_allow_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        CallbackGuard.from_settings(["not-a-network"])


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"eventType":"ProductOrderStateChangeEvent"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", body, header, now=1_700_000_010)
    assert not verify("other", body, header, now=1_700_000_010)
    assert not verify("s3cret", body + b" ", header, now=1_700_000_010)
    assert not verify("s3cret", body, header, now=1_700_001_000)  # too old: replay
    assert not verify("s3cret", body, "garbage")


def test_secret_is_never_part_of_the_resource() -> None:
    subscription = Subscription(id="s", callback="https://example.com", query="", secret="hidden")
    assert "secret" not in subscription.to_tmf()
    assert "hidden" not in repr(subscription)
