"""A namespace on any bus: every topic and consumer-group name gets a prefix.

Several platforms (test runs, staging and a demo, tenants of a lab) can then
share one Kafka or RabbitMQ without ever seeing each other's events, while the
code keeps using the catalogue's topic names (``bss.ordering.events``).
Deliveries come back with the prefix stripped, so handlers and the inbox see
the logical names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from strowger.bus.port import Bus, Delivery, LagSample, ReplayPoint, Subscriber
from strowger.events.envelope import Message
from strowger.events.topics import Topic


class Namespace:
    """Maps logical names to physical ones and back (``<prefix>.<name>``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}."

    def outward(self, name: str) -> str:
        return self.prefix + name

    def inward(self, name: str) -> str:
        return name.removeprefix(self.prefix)


class NamespacedSubscriber(Subscriber):
    def __init__(self, inner: Subscriber, namespace: Namespace, group: str, topics: Sequence[str]) -> None:
        self.inner = inner
        self.namespace = namespace
        self.group = group
        self.topics = tuple(topics)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        inward = self.namespace.inward
        return [
            replace(delivery, message=replace(delivery.message, topic=inward(delivery.message.topic)))
            for delivery in await self.inner.fetch(max_messages, timeout)
        ]

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        outward = self.namespace.outward
        await self.inner.commit(
            [replace(d, message=replace(d.message, topic=outward(d.message.topic))) for d in deliveries]
        )

    async def rewind(self, to: ReplayPoint) -> None:
        await self.inner.rewind(to)


class NamespacedBus(Bus):
    """``inner`` with every topic and group name prefixed by ``prefix``."""

    def __init__(self, inner: Bus, prefix: str) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.namespace = Namespace(prefix)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def ensure_topics(self, topics: Sequence[Topic]) -> None:
        await self.inner.ensure_topics(
            [replace(topic, name=self.namespace.outward(topic.name)) for topic in topics]
        )

    async def publish(self, messages: Sequence[Message]) -> None:
        outward = self.namespace.outward
        await self.inner.publish([replace(message, topic=outward(message.topic)) for message in messages])

    def subscriber(self, group: str, topics: Sequence[str]) -> Subscriber:
        outward = self.namespace.outward
        inner = self.inner.subscriber(outward(group), [outward(topic) for topic in topics])
        return NamespacedSubscriber(inner, self.namespace, group, topics)

    async def lag(self, group: str, topics: Sequence[str]) -> list[LagSample]:
        outward, inward = self.namespace.outward, self.namespace.inward
        samples = await self.inner.lag(outward(group), [outward(topic) for topic in topics])
        return [replace(sample, topic=inward(sample.topic), group=group) for sample in samples]
