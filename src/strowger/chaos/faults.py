"""Fault injectors: each is an async callable run alongside the orders of a scenario.

They act as an operator or a failing machine would: signals to processes, the service
scripts for brokers and databases, raw bytes onto a topic, a consumer group rewound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strowger.bus.port import ReplayPoint
from strowger.cluster.supervisor import Cluster
from strowger.events.envelope import Message

log = logging.getLogger("strowger.chaos")
ROOT = Path(__file__).resolve().parents[3]
KILL_TARGETS = ("service-ordering", "resource-ordering", "billing", "relay", "hub-delivery")
POISON_TOPIC = "bss.ordering.events"


@dataclass
class FaultContext:
    """What a fault may touch, and the signal that the scenario's orders have settled."""

    cluster: Cluster
    rng: random.Random
    outage_seconds: float
    kill_interval: float
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    injected: dict[str, int] = field(default_factory=dict)  # what was done, for the report

    def count(self, what: str, by: int = 1) -> None:
        self.injected[what] = self.injected.get(what, 0) + by


Fault = Callable[[FaultContext], Coroutine[Any, Any, None]]


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr.decode()[-300:]}")


async def kill_instances(ctx: FaultContext) -> None:
    """kill -9 a random instance of a random target component every few seconds; restart it."""
    names = [spec.name for spec in ctx.cluster.plan.processes if spec.component in KILL_TARGETS]
    while not ctx.settled.is_set():
        await _sleep_unless_settled(ctx, ctx.kill_interval)
        if ctx.settled.is_set():
            return
        victim = ctx.rng.choice(names)
        ctx.cluster.kill(victim)
        ctx.count(f"kill -9 {ctx.cluster.plan.process(victim).component}")
        await asyncio.sleep(1.0)  # a moment dead: its partitions rebalance, its locks expire
        await ctx.cluster.restart(victim)


async def _sleep_unless_settled(ctx: FaultContext, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await ctx.settled.wait()


async def stop_kafka(ctx: FaultContext) -> None:
    """The Kafka broker stopped for ``outage_seconds`` while orders flow, then started again."""
    await asyncio.sleep(2.0)
    await _run(str(ROOT / "scripts" / "services"), "down", "kafka")
    ctx.count("kafka stopped")
    try:
        await asyncio.sleep(ctx.outage_seconds)
    finally:
        await _run(str(ROOT / "scripts" / "services"), "up", "kafka")


async def restart_rabbitmq(ctx: FaultContext) -> None:
    await asyncio.sleep(2.0)
    await _run(str(ROOT / "scripts" / "services"), "down", "rabbitmq")
    ctx.count("rabbitmq stopped")
    try:
        await asyncio.sleep(ctx.outage_seconds)
    finally:
        await _run(str(ROOT / "scripts" / "services"), "up", "rabbitmq")


async def restart_postgres(ctx: FaultContext) -> None:
    """PostgreSQL restarted (every connection of every process dropped) while orders flow."""
    await asyncio.sleep(2.0)
    await _run("pg_ctlcluster", "15", "main", "restart")
    ctx.count("postgresql restarted")


async def inject_poison(ctx: FaultContext) -> None:
    """Bytes that are no event at all, published straight onto a domain topic."""
    await asyncio.sleep(1.0)
    async with _namespaced_bus(ctx.cluster) as bus:
        await bus.publish([Message(POISON_TOPIC, "poison", {}, b"\x00\xffnot an event{")])
    ctx.count("poison messages")


async def rewind_after_settle(ctx: FaultContext) -> None:
    """Once the orders settled: every consumer group rewound to the start of its topics.

    The groups' processes are stopped (a group can be rewound only with no live member),
    every offset is committed back to the beginning, and the processes start again: each
    consumer receives every event a second time. Effects must not change.
    """
    await ctx.settled.wait()
    groups = consumer_groups(ctx.cluster)
    consumers = [
        spec.name
        for spec in ctx.cluster.plan.processes
        if spec.component not in ("catalog", "relay", "operations")
    ]
    await ctx.cluster.stop(consumers)
    async with _namespaced_bus(ctx.cluster) as bus:
        for group, topics in groups.items():
            subscriber = bus.subscriber(group, topics)
            await subscriber.start()
            try:
                await subscriber.rewind(ReplayPoint(offset=0))
            finally:
                await subscriber.stop()
            ctx.count("groups rewound")
    for name in consumers:
        ctx.cluster.start(name)
    await ctx.cluster.wait_ready(consumers, 300.0)
    await wait_caught_up(ctx.cluster, groups)


def consumer_groups(cluster: Cluster) -> dict[str, list[str]]:
    """Every consumer group of the platform and its topics (from the wiring, not started)."""
    from strowger.bootstrap import bootstrap
    from strowger.settings import Settings

    plan = cluster.plan
    settings = Settings.model_validate(
        {
            "database_url": plan.database_url,
            "database_schema": plan.database_schema,
            "bus_url": plan.bus_url,
            "bus_namespace": plan.bus_namespace,
            "sample_catalog": False,
        }
    )
    platform = bootstrap(settings)
    return {runner.consumer.name: list(runner.consumer.topics) for runner in platform.runners}


async def wait_caught_up(cluster: Cluster, groups: dict[str, list[str]], timeout: float = 240.0) -> None:
    """Until no group lags on any partition (the redelivered events are all handled)."""
    async with _namespaced_bus(cluster) as bus, asyncio.timeout(timeout):
        while True:
            behind = 0
            for group, topics in groups.items():
                behind += sum(sample.lag for sample in await bus.lag(group, topics))
            if behind == 0:
                return
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def _namespaced_bus(cluster: Cluster):  # type: ignore[no-untyped-def]
    from strowger.bus import open_bus
    from strowger.bus.namespace import NamespacedBus

    bus = NamespacedBus(open_bus(cluster.plan.bus_url), cluster.plan.bus_namespace)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()
