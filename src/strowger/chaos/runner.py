"""Run chaos scenarios against a cluster and judge them by their invariants.

One cluster serves every scenario (starting ~20 processes costs minutes on 2 cores); each
scenario submits its own orders (its own TMF622 ``category``) through the routing
transport, runs its fault alongside, waits for the fault to end, and checks the order
invariants (demo driver) and the exactly-once effect counts (:mod:`strowger.chaos.invariants`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from strowger.chaos import faults
from strowger.chaos.invariants import RunScope, effect_checks, last_parked_id
from strowger.cluster.plan import plan_cluster
from strowger.cluster.routing import ClusterTransport
from strowger.cluster.supervisor import Cluster
from strowger.demo.drive import DemoDriver, DemoResult, Invariant, LocalProbe, OrderRecord
from strowger.errors import ServiceUnavailable
from strowger.store.db import Database, open_database

SETTLE_TIMEOUT = 90.0  # seconds for billing/releases to catch up once the fault has ended


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: tuple[faults.Fault, ...]
    needs_bus: str | None = None  # runs only on this bus; skipped (with the reason) otherwise


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
            "kafka", "the Kafka broker stopped, then started again", (faults.stop_kafka,), needs_bus="kafka"
        ),
        Scenario(
            "rabbitmq",
            "RabbitMQ stopped, then started again",
            (faults.restart_rabbitmq,),
            needs_bus="rabbitmq",
        ),
        Scenario("postgres", "PostgreSQL restarted under load", (faults.restart_postgres,)),
        Scenario("poison", "raw bytes published onto bss.ordering.events", (faults.inject_poison,)),
        Scenario(
            "duplicate",
            "every consumer group rewound to the beginning: all events delivered again",
            (faults.rewind_after_settle,),
        ),
        Scenario(
            "mixed",
            "kills, a poison message and a broker outage together",
            (faults.kill_instances, faults.inject_poison, faults.stop_kafka),
            needs_bus="kafka",
        ),
    )
}


@dataclass
class ScenarioResult:
    name: str
    summary: str
    orders: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
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
            refused = record.error.startswith(("HTTP 503", "ConnectError", "HTTP 502"))
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

    async def _settle_invariants(self, result: DemoResult, baseline: Mapping[str, int]) -> None:
        await self._before_settle()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
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
    root: Path = Path("var/cluster")
    failure_rate: float = 0.1  # transient activation failures, per step
    outage_seconds: float = 10.0
    kill_interval: float = 4.0
    seed: int | None = None
    database_url: str = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
    bus_url: str = "kafka://127.0.0.1:9092"


async def run_chaos(options: ChaosOptions, progress: Callable[[str], None] = print) -> list[ScenarioResult]:
    plan = plan_cluster(
        options.root,
        database_url=options.database_url,
        bus_url=options.bus_url,
        instances=options.instances,
        component_environment={
            "activation": {
                "STROWGER_ACTIVATION_FAILURE_RATE": str(options.failure_rate),
                "STROWGER_ACTIVATION_FAILURE_MODE": "transient",
            }
        },
    )
    cluster = Cluster(plan)
    progress(f"cluster {plan.cluster_id}: starting {len(plan.processes)} processes on {options.bus}")
    results: list[ScenarioResult] = []
    try:
        await cluster.up()
        database = open_database(plan.database_url, schema=plan.database_schema)
        await database.open()
        try:
            rng = random.Random(options.seed)
            for name in options.scenarios:
                progress(f"scenario {name}: {SCENARIOS[name].summary}")
                result = await run_scenario(SCENARIOS[name], cluster, database, options, rng)
                progress(f"scenario {name}: {'ok' if result.ok else 'FAIL'} in {result.seconds:.0f}s")
                results.append(result)
        finally:
            await database.close()
    finally:
        await cluster.down()
    return results


async def run_scenario(
    scenario: Scenario, cluster: Cluster, database: Database, options: ChaosOptions, rng: random.Random
) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.summary)
    if scenario.needs_bus and scenario.needs_bus != options.bus:
        result.skipped = f"needs the {scenario.needs_bus} bus; this cluster runs on {options.bus}"
        return result
    started = time.monotonic()
    ctx = faults.FaultContext(cluster, rng, options.outage_seconds, options.kill_interval)
    parked_before = await last_parked_id(database)
    running = [asyncio.create_task(fault(ctx)) for fault in scenario.faults]

    async def before_settle() -> None:
        ctx.settled.set()
        await asyncio.gather(*running)  # a fault's error is the scenario's error

    async def checks(orders: list[OrderRecord]) -> list[Invariant]:
        return await effect_checks(
            database, RunScope(orders), parked_before, ctx.injected.get("poison messages", 0)
        )

    headers = {"X-API-Key": cluster.admin_key}
    transport = ClusterTransport(cluster.plan, cluster.alive)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cluster", headers=headers, timeout=30.0
    ) as client:
        driver = ChaosDriver(
            client,
            LocalProbe(database),
            before_settle,
            checks,
            concurrency=8,
            seed=rng.randrange(2**31),
            timeout=300.0,
        )
        try:
            demo = await driver.run(options.orders, 0.0)
        finally:
            ctx.settled.set()
            for task in running:
                task.cancel()
    result.orders = len(demo.orders)
    result.outcomes = {state: demo.count(state) for state in sorted({o.state for o in demo.orders})}
    result.invariants = demo.invariants
    result.injected = dict(ctx.injected)
    result.seconds = time.monotonic() - started
    return result
