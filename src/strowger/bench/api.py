"""``strowger bench api``: POST productOrder requests per second and latency, against the stack's floor.

Every side is served by the same real uvicorn (uvloop, httptools) on a free loopback
port in this process, and loaded by the same generator in a child process (so the
client does not share the server's event loop or its core): ``concurrency`` aiohttp
keep-alive clients POST valid TMF622 bodies for the sample catalog (``demo/orders.py``,
seeded: every side gets the same bodies) as fast as the answers come back.

* **floor (peer)**: a minimal Starlette endpoint that parses the same JSON body and
  commits one SQLite row per request (WAL, ``synchronous=NORMAL``, on the loop, as the
  platform's adapter does) and answers 201: what any API on this stack pays.
* **Strowger, platform running** (the headline): the whole platform wired as ``strowger
  run all`` wires it (embedded default: SQLite + embedded bus), with an admin API key
  through the real security, input-limit and tracing middleware; its relay, consumers
  and tasks run, so each accepted order is validated and fulfilled in the background
  on the same event loop while the bench goes on.
* **Strowger, consumers stopped**: the same wiring with the consumer runners not started
  (the relay and other tasks still run): the request path alone.
* **at the target rate** (both Strowger sides again): an open loop that sends ``rate``
  requests a second on a fixed schedule, whatever the answers do, over up to
  ``open_connections`` keep-alive connections. Each latency is counted from the moment the
  request was **due**, not sent, so a server that falls behind pays for every request that
  waited (no coordinated omission). This is the target's own question (does the platform
  serve 1,000 orders a second with p99 under 50 ms?); the closed loops above measure how much
  it serves when every client sends again as soon as it is answered, where 32 clients at
  1,000 req/s already make a 32 ms mean latency by Little's law.

Figures per side: requests/s over the measured requests (after a warm-up), per-request
latency p50/p95/p99/max as the client saw it, errors (any answer but 201, or a failed
connection: must be 0), the server process's CPU per request, and the rows the server
committed (every 201 must be a stored order); for the platform sides, the events each
consumer applied and the orders per state when the load stopped (with the consumers
paced while requests are served, fulfilment lags behind a burst rather than the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.components.ordering.service import BASE_PATH
from strowger.demo.harness import free_loopback_socket, platform_settings
from strowger.demo.orders import BENCH_MIX
from strowger.security import hash_api_key, load_security_settings
from strowger.security.settings import ApiKeyEntry

Progress = Callable[[str, float], None]

ORDER_PATH = f"{BASE_PATH}/productOrder"
PEER_PATH = "/orders"
TARGET_PER_SECOND = 1000
TARGET_P99_MS = 50.0
SERVER_START_TIMEOUT = 60.0
CLOSED_SIDES = ("peer", "platform", "api_only")
AT_RATE_SIDES = ("platform_at_rate", "api_only_at_rate")
SIDES = CLOSED_SIDES + AT_RATE_SIDES
LABELS = {
    "peer": "floor",
    "platform": "Strowger",
    "api_only": "API alone",
    "platform_at_rate": "Strowger @ rate",
    "api_only_at_rate": "API alone @ rate",
}
LEGEND = (
    "floor: Starlette + one SQLite commit per request; Strowger: the platform running "
    "(consumers on the same loop); API alone: consumers stopped; @ rate: open loop at the "
    "offered rate, latency from each request's due time"
)

__all__ = ["Plan", "render_table", "run_api_bench"]


@dataclass(frozen=True)
class Plan:
    """How much to run (tests shrink it; the figures in docs use the defaults)."""

    requests: int = 10_000
    concurrency: int = 32
    warm_up: int = 500
    seed: int = 1
    # A side slower than this stops early (its figures are over the requests it completed):
    # with the platform's consumers on the same loop a run can fall to a few requests a second.
    max_seconds: float = 60.0
    rate: float = TARGET_PER_SECOND  # requests a second offered on the @ rate sides
    open_connections: int = 64  # the open loop's connection pool (a request due waits for one)
    sides: tuple[str, ...] = SIDES  # which sides to run (in this order)

    def open_loop(self) -> Plan:
        """This plan for an @ rate side (the generator then paces by ``rate``)."""
        return replace(self, concurrency=self.open_connections)


# --- the load generator (child process) ------------------------------------------------------


def load_generator(conn: Connection) -> None:
    """Child process entry point: run each job sent on ``conn``, report progress and figures back."""
    uvloop.run(_serve_jobs(conn))


async def _serve_jobs(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    while (job := await loop.run_in_executor(None, conn.recv)) is not None:
        conn.send(("result", await _run_job(job, conn)))


def _bodies(count: int, seed: int) -> list[bytes]:
    from strowger.demo.orders import OrderGenerator

    generator = OrderGenerator(BENCH_MIX, seed=seed)
    return [orjson.dumps(generator.order()) for _ in range(count)]


async def _run_job(job: dict[str, Any], conn: Connection) -> dict[str, Any]:
    import aiohttp

    plan = Plan(**{**job["plan"], "sides": tuple(job["plan"]["sides"])})
    at_rate: bool = job.get("at_rate", False)
    bodies = _bodies(plan.warm_up + plan.requests, plan.seed)
    headers = {"Content-Type": "application/json", **job["headers"]}
    connector = aiohttp.TCPConnector(limit=plan.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        warm_deadline = time.perf_counter() + plan.max_seconds / 4
        warm = await _post_all(
            session, job["url"], bodies[: plan.warm_up], plan.concurrency, None, warm_deadline
        )
        conn.send(("measuring", None))
        step = max(1, plan.requests // 50)

        def tick(done: int) -> None:
            if done % step == 0:
                conn.send(("progress", done / plan.requests))

        started = time.perf_counter()
        deadline = started + plan.max_seconds
        if at_rate:
            measured = await _post_at_rate(
                session, job["url"], bodies[plan.warm_up :], plan.rate, tick, deadline
            )
        else:
            measured = await _post_all(
                session, job["url"], bodies[plan.warm_up :], plan.concurrency, tick, deadline
            )
        elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "latencies": measured.latencies,
        "statuses": measured.statuses,
        "warm_up_statuses": warm.statuses,
        "first_error": measured.first_error or warm.first_error,
    }


@dataclass
class _Outcome:
    latencies: list[float]
    statuses: dict[str, int]
    tick: Callable[[int], None] | None = None  # told how many were answered, after each answer
    first_error: str | None = None

    def answered(self, seconds: float, status: str, error: str | None) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if error and self.first_error is None:
            self.first_error = error
        if self.tick is not None:
            self.tick(len(self.latencies))


async def _post_all(
    session: Any,
    url: str,
    bodies: list[bytes],
    concurrency: int,
    tick: Callable[[int], None] | None,
    deadline: float,
) -> _Outcome:
    """POST every body (none started after ``deadline``), ``concurrency`` at a time (closed loop)."""
    outcome = _Outcome([], {}, tick)
    next_index = iter(range(len(bodies)))

    async def client() -> None:
        for index in next_index:
            if time.perf_counter() > deadline:
                return
            await _post(session, url, bodies[index], outcome)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return outcome


async def _post_at_rate(
    session: Any,
    url: str,
    bodies: list[bytes],
    rate: float,
    tick: Callable[[int], None] | None,
    deadline: float,
) -> _Outcome:
    """POST body ``i`` when it is due (``i / rate`` seconds after the start), none due after
    ``deadline``, whether or not earlier ones were answered (open loop); each latency runs from
    the due time, so time spent waiting for a connection or behind a stalled server counts."""
    outcome = _Outcome([], {}, tick)
    start = time.perf_counter()
    posts: list[asyncio.Task[None]] = []
    for index, body in enumerate(bodies):
        due = start + index / rate
        if due > deadline:
            break
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        posts.append(asyncio.create_task(_post(session, url, body, outcome, since=due)))
    await asyncio.gather(*posts)
    return outcome


async def _post(
    session: Any, url: str, body: bytes, outcome: _Outcome, *, since: float | None = None
) -> None:
    """POST ``body`` and record the answer in ``outcome``; the latency runs from ``since`` (default: now)."""
    started = time.perf_counter() if since is None else since
    try:
        async with session.post(url, data=body) as response:
            answer = await response.read()
            if response.status != 201:
                error = f"{response.status}: {answer[:300].decode(errors='replace')}"
                outcome.answered(time.perf_counter() - started, str(response.status), error)
                return
            outcome.answered(time.perf_counter() - started, "201", None)
    except Exception as exc:  # a refused or dropped connection is an error of the run, not a crash
        outcome.answered(time.perf_counter() - started, type(exc).__name__, f"{type(exc).__name__}: {exc}")


# --- the servers --------------------------------------------------------------------------------


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` behind uvicorn (uvloop, httptools) on a free loopback port; yields the base URL."""
    sock = free_loopback_socket()
    config = uvicorn.Config(
        app,
        loop="none",  # this process's loop (uvloop, see run_api_bench)
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=120,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="bench-uvicorn")
    try:
        async with asyncio.timeout(SERVER_START_TIMEOUT):
            while not server.started:
                if serving.done():
                    serving.result()  # surfaces uvicorn's own start-up error
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def floor_app(path: Path) -> tuple[Starlette, Callable[[], int]]:
    """The peer: parse the JSON body, commit one SQLite row, answer 201 (and a row counter)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS bench_order (id TEXT PRIMARY KEY, body TEXT NOT NULL)")

    async def create(request: Request) -> Response:
        document = orjson.loads(await request.body())
        if not isinstance(document, dict):
            return Response(b'{"code":"invalidBody"}', status_code=400, media_type="application/json")
        order_id = str(uuid.uuid4())
        document["id"] = order_id
        connection.execute("BEGIN")
        connection.execute(
            "INSERT INTO bench_order (id, body) VALUES (?, ?)", (order_id, orjson.dumps(document))
        )
        connection.execute("COMMIT")
        location = f"{PEER_PATH}/{order_id}"
        return Response(orjson.dumps(document), 201, {"Location": location}, media_type="application/json")

    def rows() -> int:
        count: int = connection.execute("SELECT COUNT(*) FROM bench_order").fetchone()[0]
        return count

    return Starlette(routes=[Route(PEER_PATH, create, methods=["POST"])]), rows


def platform_app(platform: Platform, api_key: str) -> ASGIApp:
    """What ``strowger run all`` serves: the whole app and security, one admin API key."""
    entry = ApiKeyEntry(name="bench", sha256=hash_api_key(api_key), scopes=("admin",))
    security = load_security_settings(api_keys=(entry,), api_keys_file=None)
    return create_app(platform, security, freeze_heap=True)


def without_consumers(platform: Platform) -> Platform:
    """The same platform with its consumer runners not started (relay and other tasks still run)."""
    platform.tasks = [(name, task) for name, task in platform.tasks if not name.startswith("consumer:")]
    platform.runners = []
    return platform


# --- one run ------------------------------------------------------------------------------------


class _Driver:
    """The parent's end of the load generator: send a job, follow its progress, collect figures."""

    def __init__(self, conn: Connection, progress: Progress) -> None:
        self.conn = conn
        self.progress = progress

    async def run(
        self,
        url: str,
        headers: dict[str, str],
        plan: Plan,
        label: str,
        span: tuple[float, float],
        *,
        at_rate: bool = False,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.conn.send({"url": url, "headers": headers, "plan": asdict(plan), "at_rate": at_rate})
        start, end = span
        self.progress(f"{label}: warm-up", round(start, 4))
        cpu_started = time.process_time()
        while True:
            kind, value = await loop.run_in_executor(None, self.conn.recv)
            if kind == "measuring":
                cpu_started = time.process_time()
            elif kind == "progress":
                self.progress(label, round(start + (end - start) * float(value), 4))
            else:
                value["server_cpu_seconds"] = time.process_time() - cpu_started
                return dict(value)


def figures(raw: dict[str, Any], rows: int, expected_rows: int) -> dict[str, Any]:
    """The JSON figures of one side from the generator's raw result."""
    latencies = sorted(raw["latencies"])
    requests = len(latencies)
    statuses: dict[str, int] = raw["statuses"]
    errors = sum(count for status, count in statuses.items() if status != "201")
    warm_errors = sum(count for status, count in raw["warm_up_statuses"].items() if status != "201")
    seconds = raw["seconds"]
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "per_second": round(requests / seconds, 1) if seconds else None,
        "latency_ms": {
            "p50": _ms(_percentile(latencies, 0.50)),
            "p95": _ms(_percentile(latencies, 0.95)),
            "p99": _ms(_percentile(latencies, 0.99)),
            "max": _ms(latencies[-1] if latencies else None),
        },
        "errors": errors + warm_errors,
        "statuses": statuses,
        "first_error": raw["first_error"],
        "server_cpu_us_per_request": round(raw["server_cpu_seconds"] / requests * 1e6) if requests else None,
        "rows_committed": rows,
        "rows_expected": expected_rows,
    }


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def _peer(driver: _Driver, plan: Plan, directory: Path, span: tuple[float, float]) -> dict[str, Any]:
    app, rows = floor_app(directory / "floor.db")
    async with served(app) as base_url:
        raw = await driver.run(base_url + PEER_PATH, {}, plan, "floor", span)
    return figures(raw, rows(), _created(raw))


async def _strowger(
    driver: _Driver, plan: Plan, directory: Path, side: str, span: tuple[float, float]
) -> dict[str, Any]:
    settings = platform_settings("embedded", directory, namespace="")
    platform = bootstrap(settings)
    if side.startswith("api_only"):
        without_consumers(platform)
    at_rate = side in AT_RATE_SIDES
    api_key = f"stw_bench-{secrets.token_urlsafe(24)}"
    async with served(platform_app(platform, api_key)) as base_url:
        raw = await driver.run(
            base_url + ORDER_PATH,
            {"X-API-Key": api_key},
            plan.open_loop() if at_rate else plan,
            LABELS[side],
            span,
            at_rate=at_rate,
        )
        row = await platform.database.fetchone("SELECT COUNT(*) FROM product_order_view")
        stages = _stages(platform)
        states = await _order_states(platform)
    result = figures(raw, int(row[0]) if row else 0, _created(raw))
    if at_rate:
        result["offered_per_second"] = plan.rate
    result["consumers"] = stages
    result["order_states"] = states
    return result


async def _order_states(platform: Platform) -> dict[str, int]:
    """Orders per state when the load stopped: how far fulfilment followed the API (or lagged)."""
    rows = await platform.database.fetchall(
        "SELECT state, COUNT(*) FROM product_order_view GROUP BY state ORDER BY state"
    )
    return {str(state): int(count) for state, count in rows}


def _created(raw: dict[str, Any]) -> int:
    return int(raw["statuses"].get("201", 0)) + int(raw["warm_up_statuses"].get("201", 0))


def _stages(platform: Platform) -> dict[str, int]:
    """Events each consumer applied while the bench ran (what competed with the API for the loop)."""
    return {runner.consumer.name: runner.stats.applied for runner in platform.runners if runner.stats.applied}


async def _bench(conn: Connection, plan: Plan, progress: Progress) -> dict[str, Any]:
    driver = _Driver(conn, progress)
    load_before = os.getloadavg()
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="strowger-bench-api-") as scratch:
        for index, side in enumerate(plan.sides):
            span = (index / len(plan.sides), (index + 1) / len(plan.sides))
            directory = Path(scratch) / side
            directory.mkdir()
            if side == "peer":
                sides[side] = await _peer(driver, plan, directory, span)
            else:
                sides[side] = await _strowger(driver, plan, directory, side, span)
    progress("done", 1.0)
    return {
        "bench": "api",
        "backend": "embedded",
        "endpoint": f"POST {ORDER_PATH}",
        "requests": plan.requests,
        "warm_up": plan.warm_up,
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "open_connections": plan.open_connections,
        **sides,
        "target": {"per_second": TARGET_PER_SECOND, "p99_ms": TARGET_P99_MS, "side": TARGET_SIDE},
        "target_met": target_met(sides.get(TARGET_SIDE)),
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }


TARGET_SIDE = "platform_at_rate"  # what `strowger run all` serves, at the target's rate


def target_met(side: dict[str, Any] | None) -> bool:
    """Whether ``side`` (an @ rate side) was offered at least the target rate and answered every
    request, warm-up included, with a 201 and a p99 (from due times) under the target."""
    return bool(
        side is not None
        and side.get("offered_per_second", 0) >= TARGET_PER_SECOND
        and side["requests"] > 0
        and side["errors"] == 0
        and (side["latency_ms"]["p99"] or float("inf")) < TARGET_P99_MS
    )


def run_api_bench(plan: Plan | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Every side of one run, as a JSON-ready dict."""
    plan = plan or Plan()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    generator = context.Process(target=load_generator, args=(child,), daemon=True, name="bench-api-load")
    generator.start()
    try:
        return uvloop.run(_bench(parent, plan, progress or (lambda description, fraction: None)))
    finally:
        with contextlib.suppress(OSError):  # a generator that died already: its error is the news
            parent.send(None)
        generator.join(10)
        if generator.is_alive():
            generator.terminate()


def render_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"bench api: {result['endpoint']}, {result['requests']:,} requests "
        f"(+{result['warm_up']} warm-up), {result['concurrency']} keep-alive clients, embedded"
    )
    columns = ("side", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU µs/req", "rows")
    for column in columns:
        table.add_column(column, justify="left" if column == "side" else "right")
    for side in SIDES:
        if side not in result:
            continue
        figures = result[side]
        latency = figures["latency_ms"]
        table.add_row(
            LABELS[side],
            f"{figures['requests']:,}",
            f"{figures['per_second']:,}",
            *(_cell(latency[key]) for key in ("p50", "p95", "p99")),
            str(figures["errors"]),
            f"{figures['server_cpu_us_per_request']:,}",
            f"{figures['rows_committed']:,}/{figures['rows_expected']:,}",
        )
    load = result["load_average"]["before"][0]
    met = "met" if result["target_met"] else "NOT met"
    table.caption = (
        f"{LEGEND} | offered rate {result['rate']:,.0f} req/s over {result['open_connections']} connections"
        f" | target ≥ {TARGET_PER_SECOND:,} req/s with p99 < {TARGET_P99_MS:.0f} ms"
        f" ({LABELS[TARGET_SIDE]}): {met}"
        f" | load average before {load}"
    )
    return table


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
