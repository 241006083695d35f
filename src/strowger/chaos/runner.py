"""Run chaos scenarios against a cluster and judge them by their invariants.

One cluster serves every scenario (starting ~20 processes costs minutes on 2 cores); each
scenario submits its own orders (its own TMF622 ``category``) through the routing
transport, runs its fault alongside, waits for the fault to end, and checks the order
invariants (demo driver) and the exactly-once effect counts (:mod:`strowger.chaos.invariants`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from strowger.chaos import faults
from strowger.chaos.invariants import RunScope, effect_checks, last_parked_id
from strowger.chaos.webhook import WebhookListener, listener_once, subscribe, unsubscribe
from strowger.cluster.plan import plan_cluster
from strowger.cluster.routing import ClusterTransport
from strowger.cluster.supervisor import Cluster
from strowger.demo.drive import UNCONFIRMED, DemoDriver, DemoResult, Invariant, LocalProbe, OrderRecord
from strowger.errors import ServiceUnavailable
from strowger.store.db import Database, open_database

log = logging.getLogger("strowger.chaos")
SETTLE_TIMEOUT = 90.0  # seconds for billing/releases to catch up once the fault has ended


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: tuple[faults.Fault, ...]
    needs_bus: str | None = None  # runs only on this bus; skipped (with the reason) otherwise
    restarts: str | None = None  # the service it stops: on shared services only when allowed
    listener: bool = False  # a webhook listener subscribed to the scenario's orders
    full_only: str = ""  # why the reduced (CI) size leaves it out of 'all'; runs with --full or by name


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("baseline", "no fault beyond transient activation failures", ()),
        Scenario(
            "kill",
            "kill -9 of a random SOM/ROM/billing/relay/hub-delivery instance, restarted",
            (faults.kill_instances,),
        ),
        Scenario(
            "kafka",
            "the Kafka broker stopped, then started again",
            (faults.stop_kafka,),
            needs_bus="kafka",
            restarts="kafka",
            full_only="stopping, restarting and recovering the broker takes minutes here; 'mixed' has one",
        ),
        Scenario(
            "rabbitmq",
            "RabbitMQ stopped, then started again",
            (faults.restart_rabbitmq,),
            needs_bus="rabbitmq",
            restarts="rabbitmq",
        ),
        Scenario(
            "postgres", "PostgreSQL restarted under load", (faults.restart_postgres,), restarts="postgresql"
        ),
        Scenario(
            "webhook",
            "a TMF622 hub listener down, then answering 500, then slow, then healthy",
            (faults.disturb_listener,),
            listener=True,
        ),
        Scenario(
            "poison",
            "a corrupt ProductOrderCreateEvent (not JSON) on bss.ordering.events",
            (faults.inject_poison,),
        ),
        Scenario(
            "duplicate",
            "every event published again (same eventId) mid-run and after settling: delivered twice",
            (faults.duplicate_everything,),
        ),
        Scenario(
            "rewind",
            "consumers stopped, every group rewound to offset 0, restarted: all events delivered again",
            (faults.rewind_after_settle,),
        ),
        Scenario(
            "mixed",
            "kills, a poison message, a Kafka outage and a failing webhook listener together",
            (faults.kill_instances, faults.inject_poison, faults.stop_kafka, faults.disturb_listener),
            needs_bus="kafka",
            restarts="kafka",
            listener=True,
        ),
    )
}


@dataclass
class ScenarioResult:
    name: str
    summary: str
    orders: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed_because: dict[str, int] = field(default_factory=dict)  # failed orders per reason, most first
    injected: dict[str, int] = field(default_factory=dict)
    invariants: list[Invariant] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return all(invariant.ok is not False for invariant in self.invariants)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "ok": self.ok,
            "skipped": self.skipped,
            "orders": self.orders,
            "outcomes": self.outcomes,
            "failed_because": self.failed_because,
            "injected": self.injected,
            "seconds": round(self.seconds, 1),
            "invariants": [{"name": i.name, "ok": i.ok, "detail": i.detail} for i in self.invariants],
        }


class ChaosDriver(DemoDriver):
    """The demo driver, made patient: faults make reads and submissions fail for a while."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        probe: LocalProbe,
        before_settle: Callable[[], Awaitable[None]],
        checks: Callable[[list[OrderRecord]], Awaitable[list[Invariant]]],
        **options: Any,
    ) -> None:
        super().__init__(client, probe=probe, **options)
        self._before_settle = before_settle
        self._checks = checks

    async def _set_faults(self, rate: float) -> dict[str, Any]:
        return {}  # activation faults come from the cluster's settings (transient), on every instance

    async def _restore_faults(self, previous: dict[str, Any]) -> None:
        return None

    async def _submit(self, record: OrderRecord, body: dict[str, Any]) -> None:
        for attempt in range(30):  # a client retries what was surely not accepted (503, refused)
            record.error = ""
            await super()._submit(record, body)
            # surely not accepted: refused, never sent, or sent with no order found by its externalId
            refused = record.error.startswith(("HTTP 503", "ConnectError", "HTTP 502", UNCONFIRMED))
            if not refused:
                return
            await asyncio.sleep(min(5.0, 0.5 * (attempt + 1)))

    async def _refresh_states(self, records: list[OrderRecord]) -> None:
        # the database or a process is down for a moment: ask again next poll
        with contextlib.suppress(ServiceUnavailable, httpx.HTTPError, OSError):
            await super()._refresh_states(records)

    async def _quarantined(self) -> int:
        try:
            return await super()._quarantined()
        except (httpx.HTTPError, OSError):
            return 0

    async def _invariants(self, result: DemoResult, baseline: Mapping[str, int]) -> list[Invariant]:
        invariants = await super()._invariants(result, baseline)
        refused = [order.error for order in result.orders if order.error]
        if refused:  # say why, or a refused submission is a FAIL nobody can act on
            first = invariants[0]
            invariants[0] = dataclasses.replace(first, detail=f"{first.detail}; first refusal: {refused[0]}")
        return invariants

    async def _settle_invariants(self, result: DemoResult, baseline: Mapping[str, int]) -> None:
        await self._before_settle()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            # an order still open when the driver stopped waiting may complete meanwhile; read its
            # state again each round, or its new charges and notifications count against an old state
            still_open = [order for order in result.orders if order.id and not order.terminal]
            await self._refresh_states(still_open)
            if still_open:
                result.quarantined = await self._quarantined()
            try:
                result.invariants = await self._invariants(result, baseline)
                result.invariants += await self._checks(result.orders)
            except (ServiceUnavailable, httpx.HTTPError) as exc:
                result.invariants = [Invariant("platform reachable for the checks", False, str(exc))]
            if result.ok or time.monotonic() > deadline:
                return
            await asyncio.sleep(1.0)


@dataclass
class ChaosOptions:
    orders: int = 60
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    bus: str = "kafka"
    instances: int = 2
    scale: Mapping[str, int] = field(default_factory=dict)  # per-component instance counts
    root: Path = Path("var/cluster")
    failure_rate: float = 0.1  # transient activation failures, per step
    outage_seconds: float = 10.0
    kill_interval: float = 4.0
    seed: int | None = None
    database_url: str = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
    bus_url: str = "kafka://127.0.0.1:9092"
    services: faults.Services = field(default_factory=faults.Services)  # a private instance: started first
    restart_shared: bool = False  # let broker/database scenarios stop the machine's shared services


@dataclass
class ChaosRun:
    """A whole chaos run: the cluster's size and start-up time, and each scenario's verdict."""

    cluster_id: str = ""
    processes: int = 0
    startup_seconds: float = 0.0
    results: list[ScenarioResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "cluster": self.cluster_id,
            "processes": self.processes,
            "startup_seconds": round(self.startup_seconds, 1),
            "scenarios": [result.to_json() for result in self.results],
        }


async def run_chaos(options: ChaosOptions, progress: Callable[[str], None] = print) -> ChaosRun:
    if options.services.instance:
        progress(f"private services '{options.services.instance}': starting (if stopped)")
        await faults.ensure_services(options.services, options.bus)
    plan = plan_cluster(
        options.root,
        database_url=options.database_url,
        bus_url=options.bus_url,
        instances=options.instances,
        scale=options.scale,
        # the webhook listener runs on this machine: the hub's SSRF guard must let loopback through
        environment={"STROWGER_HUB_ALLOWED_NETWORKS": '["127.0.0.1/32"]'},
        component_environment={
            "activation": {
                "STROWGER_ACTIVATION_FAILURE_RATE": str(options.failure_rate),
                "STROWGER_ACTIVATION_FAILURE_MODE": "transient",
            }
        },
    )
    cluster = Cluster(plan)
    faults.platform_consumers(cluster)  # the wiring, read once before any fault (and any failure)
    run = ChaosRun(plan.cluster_id, len(plan.processes))
    progress(f"cluster {plan.cluster_id}: starting {len(plan.processes)} processes on {options.bus}")
    try:
        started = time.monotonic()
        await cluster.up()
        run.startup_seconds = time.monotonic() - started
        progress(
            f"cluster {plan.cluster_id}: {len(plan.processes)} processes ready in {run.startup_seconds:.0f}s"
        )
        database = open_database(plan.database_url, schema=plan.database_schema)
        await database.open()
        try:
            rng = random.Random(options.seed)
            for name in options.scenarios:
                progress(f"scenario {name}: {SCENARIOS[name].summary}")
                result = await _scenario_or_error(SCENARIOS[name], cluster, database, options, rng)
                verdict = "skipped" if result.skipped else ("ok" if result.ok else "FAIL")
                progress(f"scenario {name}: {verdict} in {result.seconds:.0f}s")
                run.results.append(result)
        finally:
            await database.close()
    finally:
        await cluster.down()
    return run


async def _scenario_or_error(
    scenario: Scenario, cluster: Cluster, database: Database, options: ChaosOptions, rng: random.Random
) -> ScenarioResult:
    """The scenario's result; one that broke (a fault that failed, a check that raised) is a FAIL."""
    started = time.monotonic()
    try:
        return await run_scenario(scenario, cluster, database, options, rng)
    except Exception as exc:  # reported as the scenario's verdict; the next scenario runs
        log.exception("chaos scenario %s broke", scenario.name)
        result = ScenarioResult(scenario.name, scenario.summary, seconds=time.monotonic() - started)
        result.invariants = [Invariant("scenario ran to its end", False, f"{type(exc).__name__}: {exc}")]
        return result


def skip_reason(scenario: Scenario, options: ChaosOptions) -> str:
    """Why ``scenario`` cannot run with these options ('' when it can)."""
    if scenario.needs_bus and scenario.needs_bus != options.bus:
        return f"needs the {scenario.needs_bus} bus; this cluster runs on {options.bus}"
    if scenario.restarts and not options.services.instance and not options.restart_shared:
        return f"would stop the shared {scenario.restarts}; allow it with --restart-shared"
    return ""


async def run_scenario(
    scenario: Scenario, cluster: Cluster, database: Database, options: ChaosOptions, rng: random.Random
) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.summary)
    result.skipped = skip_reason(scenario, options)
    if result.skipped:
        return result
    started = time.monotonic()
    listener = WebhookListener() if scenario.listener else None
    ctx = faults.FaultContext(
        cluster, rng, options.outage_seconds, options.kill_interval, options.services, listener
    )
    parked_before = await last_parked_id(database)
    headers = {"X-API-Key": cluster.admin_key}
    transport = ClusterTransport(cluster.plan, cluster.alive)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://cluster", headers=headers, timeout=30.0)
        )
        driver = ChaosDriver(
            client,
            LocalProbe(database),
            lambda: _end_faults(ctx, running),
            lambda orders: _checks(database, ctx, orders, parked_before),
            concurrency=8,
            seed=rng.randrange(2**31),
            timeout=settle_budget(options.orders),
            max_open=MAX_OPEN_ORDERS,
        )
        if listener is not None:
            await listener.start()
            stack.push_async_callback(listener.stop)
            subscriptions = await subscribe(client, listener, driver.category)
            stack.push_async_callback(unsubscribe, client, subscriptions)
        running = [asyncio.create_task(fault(ctx)) for fault in scenario.faults]
        try:
            demo = await driver.run(options.orders, 0.0)
        finally:
            ctx.settled.set()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)  # a cancelled outage restarts its service
    result.orders = len(demo.orders)
    result.outcomes = {state: demo.count(state) for state in sorted({o.state for o in demo.orders})}
    result.failed_because = dict(demo.reasons("failed").most_common())
    result.invariants = demo.invariants
    result.injected = dict(ctx.injected)
    result.seconds = time.monotonic() - started
    return result


# Orders submitted and not yet terminal, at most: the faults are the test, not an overload. Unbounded,
# the first full-size run queued ~1,500 orders (minutes of work at ~4 orders/s on 2 cores) and most
# of them failed their saga's 30 s step timeouts while still queued (compensated, but not what a
# kill or an outage does). 50 open orders are ~12 s of work here, well inside a step's timeout.
MAX_OPEN_ORDERS = 50

# How long a scenario's orders may take to become terminal: 300 s, or 1 s per order once the
# orders outnumber that. Measured on 2 cores with 22 processes under the mixed faults: ~1.6 orders/s
# when most orders complete (1,714 in 1,100 s; a failed order costs less), so the full size's 2,000
# orders need ~20 minutes; a fixed 300 s left 1,975 open, and 0.5 s per order stopped submission
# at 1,714.
SETTLE_SECONDS, SETTLE_SECONDS_PER_ORDER = 300.0, 1.0


def settle_budget(orders: int) -> float:
    """Seconds the driver waits for ``orders`` to become terminal before checking the invariants."""
    return max(SETTLE_SECONDS, SETTLE_SECONDS_PER_ORDER * orders)


async def _end_faults(ctx: faults.FaultContext, running: list[asyncio.Task[None]]) -> None:
    ctx.settled.set()
    await asyncio.gather(*running)  # a fault's error is the scenario's error


async def _checks(
    database: Database, ctx: faults.FaultContext, orders: list[OrderRecord], parked_before: float
) -> list[Invariant]:
    readers = faults.poison_readers(ctx.cluster) if ctx.poison else (frozenset(), frozenset())
    checks = await effect_checks(database, RunScope(orders), parked_before, ctx.poison, readers)
    if ctx.listener is not None:
        checks.append(listener_once(ctx.listener, orders))
    return checks
