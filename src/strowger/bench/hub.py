"""`strowger bench hub`: webhook deliveries per second to a local listener, against plain HTTP loops.

One run, one listener: a minimal HTTP/1.1 server (keep-alive, answers 204) in a
child process, so it has a core of its own and costs both sides the same.

* **peers** — plain loops: ``concurrency`` tasks POST the same signed bodies, nothing else
  (no database, no retries, no ordering), with Strowger's own HTTP/1.1 client
  (:mod:`strowger.tmf.http1`: the ceiling), with ``aiohttp`` (the most used asyncio client)
  and with ``httpx.AsyncClient`` (on a sample).
* **floor** — a hand-written *durable* deliverer with Strowger's client: it reads the
  same events from the embedded bus's log with ``sqlite3``, 500 per partition at a time, POSTs
  them signed (one entity's events one after another, ``concurrency`` at once), and commits the
  partition's offset once the whole batch is delivered. At-least-once and ordered per entity,
  and nothing more: no per-delivery rows, no retries, no dead letters, one listener. What the
  least durable deliverer on this machine does (SQLite only).
* **strowger** — the whole hub path: ``events`` TMF notifications already on
  the embedded bus, the ``hub-delivery`` fan-out consumer (inbox, query match,
  one queued delivery per subscription) and the delivery worker (claim, sign
  with HMAC, SSRF-guard, POST, settle), on SQLite or PostgreSQL. Timed from
  start to the last delivery acknowledged.

p50/p99 are per-POST latencies (request sent → status received) on every side.
Everything runs on uvloop, as ``strowger serve`` does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import aiohttp
import httpx
import uvloop
from rich.table import Table

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import ConsumerRunner
from strowger.events.envelope import Category, Envelope, encode
from strowger.events.topics import Topic
from strowger.store.db import Database
from strowger.store.deadletters import PARKED_TABLES
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES
from strowger.tmf.delivery import (
    HUB_DELIVERY_TABLES,
    DeliveryOptions,
    DeliveryWorker,
    HubFanOut,
    HubRoute,
    delivery_headers,
)
from strowger.tmf.http1 import Http1Client
from strowger.tmf.hubs import HUB_TABLES, CallbackGuard, HubStore

Progress = Callable[[str, float], None]
API = "productOrderingManagement"
EVENT_TYPES = frozenset({"ProductOrderCreateEvent", "ProductOrderStateChangeEvent"})
SECRET = "bench-secret"
HTTPX_SAMPLE = 2000  # events the httpx peer posts (the first ones)
POSTGRES_URL = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"


# --- the listener (child process) --------------------------------------------------------------


class _CountingHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: reads each request (headers + Content-Length body), answers 204."""

    def __init__(self, counter: Synchronized[int]) -> None:
        self.counter = counter
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            with self.counter.get_lock():
                self.counter.value += 1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n")


def serve_listener(port_out: Connection, counter: Synchronized[int]) -> None:
    """Child process entry point: serve on 127.0.0.1 (random port, sent back) until terminated."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _CountingHttp(counter), "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


# --- the two sides -----------------------------------------------------------------------------


def _events(count: int, entities: int) -> list[Envelope]:
    return [
        Envelope(
            event_type="ProductOrderStateChangeEvent",
            payload={"productOrder": {"id": f"order-{i % entities}", "state": "inProgress", "seq": i}},
            entity_key=f"order-{i % entities}",
            correlation_id=f"bench-{i}",
        )
        for i in range(count)
    ]


def _percentiles(latencies: Sequence[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


async def run_peer(
    url: str, events: Sequence[Envelope], concurrency: int, progress: Progress
) -> dict[str, Any]:
    """A plain httpx loop POSTing the same bodies (signed, same headers) to the same listener."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as client:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            return (await client.post(url, content=body, headers=headers)).status_code

        return await _plain_loop("peer: plain httpx loop", post, events, concurrency, progress, 1 / 4)


async def _plain_loop(
    label: str,
    post: Callable[[bytes, dict[str, str]], Awaitable[int]],
    events: Sequence[Envelope],
    concurrency: int,
    progress: Progress,
    start: float,
) -> dict[str, Any]:
    """``concurrency`` tasks POSTing the same signed bodies with ``post``, nothing else."""
    messages = [encode(envelope, "bench") for envelope in events]
    latencies: list[float] = []
    next_index = iter(range(len(messages)))

    async def post_some() -> None:
        for index in next_index:
            message = messages[index]
            headers = delivery_headers(message.headers, message.value, SECRET, 1)
            headers["Content-Type"] = "application/json"
            started = time.perf_counter()
            status = await post(message.value, headers)
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                raise RuntimeError(f"{label}: the listener answered {status}")
            if index % 500 == 0:
                progress(label, start + index / len(messages) / 8)

    started = time.perf_counter()
    await asyncio.gather(*(post_some() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "deliveries": len(messages),
        "seconds": round(elapsed, 3),
        "per_second": round(len(messages) / elapsed),
    } | _percentiles(latencies)


async def run_aiohttp_peer(
    url: str, events: Sequence[Envelope], concurrency: int, progress: Progress
) -> dict[str, Any]:
    """A plain aiohttp loop POSTing the same bodies (signed, same headers) to the same listener."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10.0)
    ) as session:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return await _plain_loop("peer: plain aiohttp loop", post, events, concurrency, progress, 0.0)


async def run_http1_peer(
    url: str, events: Sequence[Envelope], concurrency: int, progress: Progress
) -> dict[str, Any]:
    """The same loop on Strowger's own client (:mod:`strowger.tmf.http1`): the hub's ceiling."""
    client = Http1Client(timeout=10.0, max_idle=concurrency)

    async def post(body: bytes, headers: dict[str, str]) -> int:
        return (await client.post(url, None, body, headers)).status

    try:
        return await _plain_loop(
            "peer: plain loop, Strowger's client", post, events, concurrency, progress, 1 / 8
        )
    finally:
        await client.close()


async def run_strowger(
    database: Database, url: str, events: Sequence[Envelope], concurrency: int, progress: Progress
) -> dict[str, Any]:
    """The hub path: events on the bus → fan-out → queued deliveries → worker → listener."""
    await database.create_tables(HUB_TABLES, PARKED_TABLES, HUB_DELIVERY_TABLES, INBOX_TABLES, OUTBOX_TABLES)
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    topic = f"bench.hub.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics([Topic(topic, Category.DOMAIN, partitions=6)])
    await HubStore(database, API).add(url, "eventType=ProductOrderStateChangeEvent", secret=SECRET)
    for start in range(0, len(events), 1000):
        await bus.publish([encode(envelope, topic) for envelope in events[start : start + 1000]])
    guard = CallbackGuard((ipaddress.ip_network("127.0.0.0/8"),))
    options = DeliveryOptions(max_in_flight=concurrency, per_listener=concurrency, batch_size=concurrency)
    worker = DeliveryWorker(database, guard, options)
    worker.stats.keep_latencies = True
    fan_out = HubFanOut(  # with the database, as the platform wires it: filtered by subscribed types
        [HubRoute(API, topic, EVENT_TYPES)],
        postgresql=database.kind == "postgresql",
        wake=worker.wake,
        database=database,
        direct=worker,
    )
    runner = ConsumerRunner(fan_out.consumer(batch_size=500), bus, database, fetch_timeout=0.1)
    started = time.perf_counter()
    tasks = [asyncio.create_task(runner.run()), asyncio.create_task(worker.run())]
    try:
        while worker.stats.delivered < len(events):
            if any(task.done() for task in tasks):
                for task in tasks:
                    if task.done():
                        task.result()
            progress("strowger: bus → hub → listener", 1 / 2 + worker.stats.delivered / len(events) / 4)
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.stop()
    return {
        "deliveries": worker.stats.delivered,
        "seconds": round(elapsed, 3),
        "per_second": round(worker.stats.delivered / elapsed),
        "failed_attempts": worker.stats.failed,
        "topic": topic,
    } | _percentiles(worker.stats.latencies)


async def run_floor(
    path: str, topic: str, url: str, concurrency: int, expected: int, progress: Progress
) -> dict[str, Any]:
    """The hand-written durable deliverer (see the module docstring), over ``topic`` in ``path``."""
    import sqlite3

    import orjson

    from strowger.bench.floors import LOG_PAGE, SAVE_OFFSET

    connection = sqlite3.connect(path, isolation_level=None)
    group = f"bench.hub.floor.{uuid.uuid4().hex[:8]}"
    latencies: list[float] = []
    delivered = 0
    slots = asyncio.Semaphore(concurrency)
    client = Http1Client(timeout=10.0, max_idle=concurrency)  # the client Strowger's hub uses
    try:

        async def post_in_order(rows: list[tuple[str, bytes]]) -> None:
            for headers_text, value in rows:  # one entity's events, one after another
                headers = delivery_headers(orjson.loads(headers_text), value, SECRET, 1)
                headers["Content-Type"] = "application/json"
                async with slots:
                    started = time.perf_counter()
                    response = await client.post(url, None, value, headers)
                    if not 200 <= response.status < 300:
                        raise RuntimeError(f"floor: the listener answered {response.status}")
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        try:
            for partition in range(6):
                offset = 0
                while rows := connection.execute(LOG_PAGE, (topic, partition, offset, 500)).fetchall():
                    by_entity: dict[str, list[tuple[str, bytes]]] = {}
                    for _offset, key, headers_text, value in rows:
                        by_entity.setdefault(key, []).append((headers_text, value))
                    await asyncio.gather(*(post_in_order(chain) for chain in by_entity.values()))
                    offset = int(rows[-1][0]) + 1
                    connection.execute(SAVE_OFFSET, (group, topic, partition, offset))
                    delivered += len(rows)
                    progress("floor: hand-written durable deliverer", 3 / 4 + delivered / expected / 4)
            elapsed = time.perf_counter() - started
        finally:
            connection.close()
    finally:
        await client.close()
    return {
        "deliveries": delivered,
        "seconds": round(elapsed, 3),
        "per_second": round(delivered / elapsed),
    } | _percentiles(latencies)


async def _open_database(db: str, directory: str) -> Database:
    if db == "sqlite":
        from strowger.store.sqlite import SqliteDatabase

        database: Database = SqliteDatabase(f"sqlite:///{directory}/bench-hub.db")
    else:
        from strowger.store.postgres import PostgresDatabase

        database = PostgresDatabase(POSTGRES_URL, schema=f"bench_hub_{uuid.uuid4().hex[:8]}")
    await database.open()
    return database


async def _drop(database: Database) -> None:
    schema = getattr(database, "schema", None)
    if database.kind == "postgresql" and schema:
        async with database.transaction() as tx:
            await tx.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_hub_bench(
    db: str, events: int, entities: int, concurrency: int, progress: Progress
) -> dict[str, Any]:
    """Both sides against one listener process; the figures as one dict."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    receive_port, send_port = context.Pipe(duplex=False)
    listener = context.Process(target=serve_listener, args=(send_port, counter), daemon=True)
    listener.start()
    try:
        port = receive_port.recv()
        url = f"http://127.0.0.1:{port}/listener/bench"
        workload = _events(events, entities)

        async def both() -> dict[str, Any]:
            aiohttp_peer = await run_aiohttp_peer(url, workload, concurrency, progress)
            http1_peer = await run_http1_peer(url, workload, concurrency, progress)
            # httpx degrades badly under concurrency: a sample is enough for its rate, and bounded.
            peer = await run_peer(url, workload[:HTTPX_SAMPLE], concurrency, progress)
            with tempfile.TemporaryDirectory() as directory:
                database = await _open_database(db, directory)
                try:
                    strowger = await run_strowger(database, url, workload, concurrency, progress)
                    floor: dict[str, Any] = {"missing": "the hand-written floor reads the SQLite log only"}
                    if db == "sqlite":  # the same events, already in the log Strowger read
                        topic = str(strowger["topic"])
                        path = f"{directory}/bench-hub.db"
                        floor = await run_floor(path, topic, url, concurrency, len(workload), progress)
                finally:
                    await _drop(database)
                    await database.close()
            strowger.pop("topic", None)
            return {
                "strowger": strowger,
                "floor": floor,
                "http1_peer": http1_peer,
                "aiohttp_peer": aiohttp_peer,
                "peer": peer,
            }

        figures = uvloop.run(both())
    finally:
        listener.terminate()
        listener.join(5)
    return {
        "benchmark": "hub",
        "database": db,
        "events": events,
        "entities": entities,
        "concurrency": concurrency,
        "listener_requests": counter.value,
        **figures,
        "target_per_second": 3000,
    }


def render_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"Hub webhook delivery — {result['events']} events, {result['entities']} entities, "
        f"concurrency {result['concurrency']}, {result['database']}"
    )
    for column in ("side", "deliveries", "seconds", "deliveries/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "side" else "right")
    sides = (
        ("strowger", "Strowger hub (bus → fan-out → worker)"),
        ("floor", "hand-written durable deliverer (log → POST → offset)"),
        ("http1_peer", "plain loop, Strowger's HTTP client"),
        ("aiohttp_peer", "plain aiohttp loop"),
        ("peer", f"plain httpx loop (first {HTTPX_SAMPLE})"),
    )
    for side, label in sides:
        figures = result.get(side) or {}
        if "deliveries" not in figures:
            continue
        table.add_row(
            label,
            str(figures["deliveries"]),
            f"{figures['seconds']:.2f}",
            f"{figures['per_second']:,}",
            f"{figures['p50_ms']:.2f}",
            f"{figures['p99_ms']:.2f}",
        )
    return table
