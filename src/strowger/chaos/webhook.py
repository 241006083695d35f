"""A real webhook listener for the chaos suite: subscribed through the TMF622 hub, made to fail.

The listener is an aiohttp server on 127.0.0.1 that the cluster's hub-delivery processes
POST to. Its behaviour is switched while orders flow: down (nothing listens: connection
refused), failing (every POST answers 500), slow (answers after a delay shorter than the
delivery timeout), healthy. It records every POST and, like a well-behaved TMF listener,
counts each event's EFFECT once by ``eventId``; the invariant then asks whether every
matching event reached it exactly once per subscription after it recovered, and nothing
else did.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

from strowger.cluster.plan import free_port
from strowger.demo.drive import ORDERS, TERMINAL, Invariant, OrderRecord

HUB = ORDERS.rsplit("/", 1)[0] + "/hub"
CREATED = "created"  # ProductOrderCreateEvent: one per accepted order
FINISHED = "finished"  # ProductOrderStateChangeEvent into a terminal state: one per terminal order


class Mode(enum.Enum):
    DOWN = "down"
    FAILING = "failing"
    SLOW = "slow"
    HEALTHY = "healthy"


@dataclass
class Received:
    """What one subscription's callback saw."""

    attempts: int = 0  # every POST, answered or not
    refused: int = 0  # answered 500 on purpose
    malformed: int = 0  # a body that was no TMF notification (answered 400)
    accepted: Counter[str] = field(default_factory=Counter)  # eventId -> 2xx answers
    orders: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # order -> eventIds


class WebhookListener:
    """An HTTP listener whose availability the scenario controls; see the module docstring."""

    def __init__(self, slow_seconds: float = 2.0) -> None:
        self.slow_seconds = slow_seconds
        self.mode = Mode.HEALTHY
        self.received: dict[str, Received] = defaultdict(Received)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    def callback(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        self.port = free_port()  # fixed for the listener's life: down and up again on the same address
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    async def switch(self, mode: Mode) -> None:
        """Down closes the listening socket (the hub sees connection refused); any other mode reopens it."""
        if mode is Mode.DOWN and self._site is not None:
            await self._site.stop()
            self._site = None
        elif mode is not Mode.DOWN and self._site is None:
            await self._listen()
        self.mode = mode

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _handle(self, request: web.Request) -> web.Response:
        seen = self.received[request.match_info["path"]]
        seen.attempts += 1
        if self.mode is Mode.FAILING:
            seen.refused += 1
            return web.json_response({"reason": "chaos: listener failing"}, status=500)
        if self.mode is Mode.SLOW:
            await asyncio.sleep(self.slow_seconds)
        try:
            body = orjson.loads(await request.read())
            event_id = str(body["eventId"])
            order_id = str(body["event"]["productOrder"]["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            seen.malformed += 1
            return web.json_response({"reason": "not a TMF622 notification"}, status=400)
        seen.accepted[event_id] += 1
        seen.orders[order_id].add(event_id)
        return web.Response(status=204)


async def subscribe(client: httpx.AsyncClient, listener: WebhookListener, category: str) -> list[str]:
    """Two TMF622 hub subscriptions of this scenario's orders (by category); their ids."""
    queries = {
        CREATED: f"eventType=ProductOrderCreateEvent&event.productOrder.category={category}",
        FINISHED: (
            f"eventType=ProductOrderStateChangeEvent&event.productOrder.category={category}"
            f"&event.productOrder.state={','.join(sorted(TERMINAL))}"
        ),
    }
    ids = []
    for path, query in queries.items():
        response = await client.post(HUB, json={"callback": listener.callback(path), "query": query})
        if response.status_code != 201:
            raise RuntimeError(f"hub subscription refused: HTTP {response.status_code} {response.text[:300]}")
        ids.append(str(response.json()["id"]))
    return ids


async def unsubscribe(client: httpx.AsyncClient, ids: Iterable[str]) -> None:
    for subscription_id in ids:
        with contextlib.suppress(httpx.HTTPError):  # best effort: the scenario's verdict is already in
            await client.delete(f"{HUB}/{subscription_id}")


def listener_once(listener: WebhookListener, orders: Iterable[OrderRecord]) -> Invariant:
    """Every matching event reached each subscription exactly once by eventId, and nothing else did."""
    submitted = [order for order in orders if order.id]
    expected = {
        CREATED: {order.id for order in submitted},
        FINISHED: {order.id for order in submitted if order.state in TERMINAL},
    }
    problems: list[str] = []
    counts: list[str] = []
    for path, wanted in expected.items():
        seen = listener.received[path]
        problems += _mismatches(path, wanted, seen.orders)
        redelivered = sum(count - 1 for count in seen.accepted.values())
        counts.append(
            f"{path}: {len(seen.accepted)}/{len(wanted)} events ({seen.attempts} POSTs, "
            f"{seen.refused} answered 500, {redelivered} redelivered)"
        )
    detail = "; ".join(counts) + (f"; {problems[0]}" if problems else "")
    return Invariant("webhook listener got every matching event once (by eventId)", not problems, detail)


def _mismatches(path: str, wanted: set[str], seen: Mapping[str, set[str]]) -> list[str]:
    missing = sorted(wanted - set(seen))
    foreign = sorted(set(seen) - wanted)
    doubled = sorted(order for order, events in seen.items() if len(events) > 1)
    problems = []
    if missing:
        problems.append(f"{path}: {len(missing)} orders never delivered, e.g. {missing[0]}")
    if foreign:
        problems.append(f"{path}: {len(foreign)} unexpected orders, e.g. {foreign[0]}")
    if doubled:
        problems.append(f"{path}: {len(doubled)} orders with several distinct events, e.g. {doubled[0]}")
    return problems


def describe(received: Mapping[str, Received]) -> dict[str, Any]:
    """The listener's counts for the JSON report."""
    return {
        path: {"posts": seen.attempts, "refused": seen.refused, "events": len(seen.accepted)}
        for path, seen in received.items()
    }
