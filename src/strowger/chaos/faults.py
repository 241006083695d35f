"""Fault injectors: each is an async callable run alongside the orders of a scenario.

They act as an operator or a failing machine would: signals to processes, the service
scripts for brokers and databases, a webhook listener that fails, a corrupt message onto
a topic, every event published twice, a consumer group rewound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strowger.bus.port import ReplayPoint
from strowger.bus.runtime import Consumer
from strowger.chaos.webhook import Mode, WebhookListener
from strowger.cluster.supervisor import Cluster
from strowger.errors import MalformedMessage
from strowger.events.envelope import Header, Message, decode

log = logging.getLogger("strowger.chaos")
ROOT = Path(__file__).resolve().parents[3]
KILL_TARGETS = ("service-ordering", "resource-ordering", "billing", "relay", "hub-delivery")
POISON_TOPIC = "bss.ordering.events"
POISON_TYPE = "ProductOrderCreateEvent"


@dataclass(frozen=True, slots=True)
class Services:
    """The PostgreSQL cluster and the ``scripts/services`` instance the chaos cluster runs on.

    ``instance`` is a private set (``STROWGER_SERVICES_INSTANCE``): stopping and restarting
    it disturbs nobody else. Empty: the machine's shared services.
    """

    instance: str = ""
    postgres_cluster: str = "main"

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "STROWGER_SERVICES_INSTANCE"}
        env["CI"] = "false"  # under CI, `up rabbitmq` also resets the broker: it would drop our queues
        return env | ({"STROWGER_SERVICES_INSTANCE": self.instance} if self.instance else {})


@dataclass
class FaultContext:
    """What a fault may touch, and the signal that the scenario's orders have settled."""

    cluster: Cluster
    rng: random.Random
    outage_seconds: float
    kill_interval: float
    services: Services = Services()
    listener: WebhookListener | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    poison: list[str] = field(default_factory=list)  # event ids of the poison messages injected
    injected: dict[str, int] = field(default_factory=dict)  # what was done, for the report

    def count(self, what: str, by: int = 1) -> None:
        self.injected[what] = self.injected.get(what, 0) + by


Fault = Callable[[FaultContext], Coroutine[Any, Any, None]]


async def _run(*command: str, env: dict[str, str] | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
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


async def _service_outage(ctx: FaultContext, service: str) -> None:
    """``scripts/services down <service>`` for ``outage_seconds`` while orders flow, then ``up``."""
    script, env = str(ROOT / "scripts" / "services"), ctx.services.environment()
    await asyncio.sleep(2.0)
    await _run(script, "down", service, env=env)
    ctx.count(f"{service} stopped")
    try:
        await asyncio.sleep(ctx.outage_seconds)
    finally:
        await _run(script, "up", service, env=env)  # waits until the service answers again


async def stop_kafka(ctx: FaultContext) -> None:
    """The Kafka broker stopped for ``outage_seconds`` while orders flow, then started again."""
    await _service_outage(ctx, "kafka")


async def restart_rabbitmq(ctx: FaultContext) -> None:
    await _service_outage(ctx, "rabbitmq")


async def restart_postgres(ctx: FaultContext) -> None:
    """PostgreSQL restarted (every connection of every process dropped) while orders flow."""
    await asyncio.sleep(2.0)
    await _run("pg_ctlcluster", "15", ctx.services.postgres_cluster, "restart")
    ctx.count("postgresql restarted")


async def disturb_listener(ctx: FaultContext) -> None:
    """The webhook listener down, then answering 500, then slow, each for a while; then healthy."""
    listener = ctx.listener
    if listener is None:
        raise RuntimeError("the webhook fault needs the scenario's listener")
    phase = ctx.outage_seconds
    await asyncio.sleep(1.0)
    try:
        for mode in (Mode.DOWN, Mode.FAILING, Mode.SLOW):
            await listener.switch(mode)
            ctx.count(f"listener {mode.value} (s)", int(phase))
            await asyncio.sleep(phase)
    finally:
        await listener.switch(Mode.HEALTHY)


async def inject_poison(ctx: FaultContext) -> None:
    """A corrupt message on a domain topic: headers of an event every consumer wants, a body that is none.

    The headers make it look like a ``ProductOrderCreateEvent`` (a consumer filters on them
    before decoding: headers alone would be skipped by all), so every group reading the type
    must dead-letter it, and nothing else may happen.
    """
    await asyncio.sleep(1.0)
    event_id = f"poison-{secrets.token_hex(6)}"
    headers = {Header.EVENT_ID.value: event_id, Header.EVENT_TYPE.value: POISON_TYPE}
    async with _namespaced_bus(ctx.cluster) as bus:
        await bus.publish([Message(POISON_TOPIC, event_id, headers, b"\x00\xffnot an event{")])
    ctx.poison.append(event_id)
    ctx.count("poison messages")


def poison_readers(cluster: Cluster) -> tuple[frozenset[str], frozenset[str]]:
    """The consumer groups that must dead-letter the poison, and those that may.

    Must: a group reading the topic whose filter is the static list of event types (or none)
    and takes the poison's type. May, besides: a group whose filter is decided at run time
    (the hub fan-out takes only the types somebody subscribed to right now).
    """
    readers = [consumer for consumer in platform_consumers(cluster) if POISON_TOPIC in consumer.topics]
    static = [consumer for consumer in readers if type(consumer).wants is Consumer.wants]
    required = frozenset(consumer.name for consumer in static if consumer.wants(POISON_TYPE))
    allowed = frozenset(
        consumer.name
        for consumer in readers
        if not consumer.event_types or POISON_TYPE in consumer.event_types
    )
    return required, required | allowed


async def duplicate_everything(ctx: FaultContext) -> None:
    """Every event delivered again to every consumer: once while orders flow, once after they settled.

    Each pass reads every topic of the cluster from its beginning and publishes an exact copy
    of each event (same key, headers, eventId, body): what a producer retrying a publish or a
    broker redelivering after a lost acknowledgement does. The consumers run on; their effects
    must not change. Corrupt messages (an earlier scenario's poison) are not copied.
    """
    groups = consumer_groups(ctx.cluster)
    topics = sorted({topic for group_topics in groups.values() for topic in group_topics})
    await _sleep_unless_settled(ctx, 3.0 * ctx.kill_interval)
    ctx.count("events copied", await _copy_all(ctx.cluster, topics))
    await ctx.settled.wait()
    ctx.count("events copied", await _copy_all(ctx.cluster, topics))
    await wait_caught_up(ctx.cluster, groups)


async def _copy_all(cluster: Cluster, topics: list[str]) -> int:
    """Publish a copy of every decodable message now on ``topics``; how many were copied."""
    group = f"chaos-duplicator-{secrets.token_hex(4)}"  # a fresh group reads from the beginning
    copied = 0
    async with _namespaced_bus(cluster) as bus:
        ends = {(s.topic, s.partition): s.end for s in await bus.lag(group, topics) if s.end > 0}
        subscriber = bus.subscriber(group, topics)
        await subscriber.start()
        try:
            async with asyncio.timeout(120.0):
                while ends:
                    deliveries = await subscriber.fetch(500, 1.0)
                    copies = [d.message for d in deliveries if _decodable(d.message)]
                    for delivery in deliveries:
                        place = (delivery.message.topic, delivery.partition)
                        if place in ends and delivery.offset + 1 >= ends[place]:
                            del ends[place]  # read up to where the log ended when the pass began
                    await bus.publish(copies)
                    copied += len(copies)
        finally:
            await subscriber.stop()
    return copied


def _decodable(message: Message) -> bool:
    try:
        decode(message)
    except MalformedMessage:
        return False
    return True


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
    return {consumer.name: list(consumer.topics) for consumer in platform_consumers(cluster)}


@functools.lru_cache(maxsize=4)
def platform_consumers(cluster: Cluster) -> tuple[Consumer, ...]:
    """The consumers the cluster's processes run, from the platform's wiring (nothing started; cached)."""
    from strowger.bootstrap import bootstrap
    from strowger.cluster.provision import schema_map
    from strowger.settings import Settings

    plan = cluster.plan
    settings = Settings.model_validate(
        {
            "database_url": plan.database_url,
            "database_schema": plan.database_schema,
            "database_schemas": schema_map(plan) if plan.split_database else {},
            "bus_url": plan.bus_url,
            "bus_namespace": plan.bus_namespace,
            "sample_catalog": False,
        }
    )
    return tuple(runner.consumer for runner in bootstrap(settings).runners)


async def wait_caught_up(cluster: Cluster, groups: dict[str, list[str]], timeout: float = 240.0) -> None:
    """Until no group lags on any partition (the redelivered events are all handled).

    TimeoutError names the groups still behind and by how much, or the last lag query's error.
    """
    behind: dict[str, int | str] = {}
    try:
        async with _namespaced_bus(cluster) as bus, asyncio.timeout(timeout):
            while True:
                behind = {}
                for group, topics in groups.items():
                    try:
                        lag = sum(sample.lag for sample in await bus.lag(group, topics))
                    except Exception as exc:  # the admin API timed out (raw KafkaException too): ask again
                        behind[group] = f"lag unknown: {exc}"
                        continue
                    if lag:
                        behind[group] = lag
                if not behind:
                    return
                await asyncio.sleep(1.0)
    except TimeoutError:
        raise TimeoutError(f"consumer groups still behind after {timeout:.0f}s: {behind}") from None


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


async def ensure_services(services: Services, bus: str) -> None:
    """Start the private instance's PostgreSQL and the bus's broker if stopped; returns once they answer."""
    wanted = ["postgresql", bus]
    script = str(ROOT / "scripts" / "services")
    await _run(script, "up", *wanted, env=services.environment())
    if bus == "rabbitmq" and services.instance:
        # The private broker is the chaos suite's alone: start each run without the streams of
        # earlier clusters (a node holding hundreds of them boots too slowly to restart in time).
        await _run(script, "reset", "rabbitmq", env=services.environment())
