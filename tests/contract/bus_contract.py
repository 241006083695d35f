"""The bus port's contract: one base class, subclassed once per backend.

A subclass provides the ``bus`` fixture (a started backend); every test here
then runs against it for real. See strowger.bus.port for the guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from strowger.bus.port import Bus, Delivery, ReplayPoint, Subscriber
from strowger.events.envelope import Message
from strowger.events.topics import Topic
from tests.conftest import unique

PARTITIONS = 4


def message(topic: str, key: str, n: int) -> Message:
    return Message(topic=topic, key=key, headers={"eventId": f"{key}-{n}", "eventType": "T"}, value=b"%d" % n)


async def drain(
    subscriber: Subscriber, count: int, *, timeout: float = 20.0, commit: bool = True
) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (or fail after ``timeout`` seconds)."""
    received: list[Delivery] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(received) < count:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            pytest.fail(f"received {len(received)} of {count} messages within {timeout}s")
        batch = await subscriber.fetch(max_messages=500, timeout=min(1.0, remaining))
        if batch and commit:
            await subscriber.commit(batch)
        received.extend(batch)
    return received


async def quiet(subscriber: Subscriber, seconds: float = 1.0) -> list[Delivery]:
    """Whatever arrives within ``seconds`` (expected: nothing)."""
    return await subscriber.fetch(max_messages=500, timeout=seconds)


class BusContract:
    """Every backend passes these tests. Subclasses override the ``bus`` fixture."""

    @pytest.fixture
    async def bus(self) -> AsyncIterator[Bus]:
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    async def topic(self, bus: Bus) -> str:
        name = unique("contract")
        await bus.ensure_topics(
            [Topic(name, category=__import__("strowger").events.Category.DOMAIN, partitions=PARTITIONS)]
        )
        return name

    async def _member(self, bus: Bus, group: str, topic: str) -> Subscriber:
        subscriber = bus.subscriber(group, [topic])
        await subscriber.start()
        return subscriber

    async def test_published_messages_are_consumed_with_headers(self, bus: Bus, topic: str) -> None:
        member = await self._member(bus, unique("g"), topic)
        try:
            await bus.publish([message(topic, "order-1", 1), message(topic, "order-2", 1)])
            received = await drain(member, 2)
        finally:
            await member.stop()
        by_id = {d.message.event_id: d.message for d in received}
        assert set(by_id) == {"order-1-1", "order-2-1"}
        assert by_id["order-1-1"].key == "order-1"
        assert by_id["order-1-1"].headers["eventType"] == "T"
        assert by_id["order-1-1"].value == b"1"
        assert all(d.message.topic == topic for d in received)

    async def test_messages_of_one_key_arrive_in_publish_order(self, bus: Bus, topic: str) -> None:
        member = await self._member(bus, unique("g"), topic)
        keys = [f"order-{k}" for k in range(5)]
        try:
            for n in range(20):
                await bus.publish([message(topic, key, n) for key in keys])
            received = await drain(member, 100)
        finally:
            await member.stop()
        for key in keys:
            values = [int(d.message.value) for d in received if d.message.key == key]
            assert values == list(range(20)), key

    async def test_two_members_of_a_group_share_the_work_without_overlap(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        first = await self._member(bus, group, topic)
        second = await self._member(bus, group, topic)
        try:
            await asyncio.sleep(0.5)  # let the group settle
            await bus.publish([message(topic, f"order-{k}", 0) for k in range(40)])
            received_first: list[Delivery] = []
            received_second: list[Delivery] = []
            deadline = asyncio.get_running_loop().time() + 30
            while len(received_first) + len(received_second) < 40:
                assert asyncio.get_running_loop().time() < deadline, "group did not receive all messages"
                for member, sink in ((first, received_first), (second, received_second)):
                    batch = await member.fetch(max_messages=100, timeout=0.2)
                    if batch:
                        await member.commit(batch)
                    sink.extend(batch)
        finally:
            await first.stop()
            await second.stop()
        keys_first = {d.message.key for d in received_first}
        keys_second = {d.message.key for d in received_second}
        assert len(received_first) + len(received_second) == 40
        assert not keys_first & keys_second
        assert keys_first and keys_second, "one member got everything: no scale-out"

    async def test_a_member_joining_later_shares_each_topic_of_the_group(self, bus: Bus, topic: str) -> None:
        # A component's consumer reads several topics, most of them quiet. An assignor that only
        # balances partition COUNTS can hand the joiner every partition of the quiet topic and
        # leave all the traffic on the first member: two instances, one doing the work.
        quiet_topic = unique("contract-quiet")
        await bus.ensure_topics(
            [
                Topic(
                    quiet_topic, category=__import__("strowger").events.Category.DOMAIN, partitions=PARTITIONS
                )
            ]
        )
        group = unique("g")
        first = bus.subscriber(group, [topic, quiet_topic])
        await first.start()
        await quiet(first, 0.5)  # the first member alone owns every partition
        second = bus.subscriber(group, [topic, quiet_topic])
        await second.start()
        received: dict[str, list[Delivery]] = {"first": [], "second": []}
        try:
            await asyncio.sleep(0.5)  # let the group settle
            await bus.publish([message(topic, f"order-{k}", 0) for k in range(40)])
            deadline = asyncio.get_running_loop().time() + 30
            while sum(map(len, received.values())) < 40:
                assert asyncio.get_running_loop().time() < deadline, "group did not receive all messages"
                for name, member in (("first", first), ("second", second)):
                    batch = await member.fetch(max_messages=100, timeout=0.2)
                    if batch:
                        await member.commit(batch)
                    received[name].extend(batch)
        finally:
            await first.stop()
            await second.stop()
        assert received["first"] and received["second"], "one member got all of the busy topic"

    async def test_uncommitted_deliveries_are_redelivered_to_the_group(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        member = await self._member(bus, group, topic)
        await bus.publish([message(topic, "order-1", n) for n in range(10)])
        first = await drain(member, 10, commit=False)
        await member.commit(first[:4])  # the member "crashes" after handling 4 of 10
        await member.stop()
        replacement = await self._member(bus, group, topic)
        try:
            again = await drain(replacement, 6)
            assert sorted(int(d.message.value) for d in again) == list(range(4, 10))
            assert not await quiet(replacement)
        finally:
            await replacement.stop()

    async def test_committed_deliveries_are_not_redelivered(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        member = await self._member(bus, group, topic)
        await bus.publish([message(topic, "order-1", n) for n in range(5)])
        await drain(member, 5)
        await member.stop()
        member = await self._member(bus, group, topic)
        try:
            assert not await quiet(member, 2.0)
        finally:
            await member.stop()

    async def test_a_group_can_be_rewound_to_a_timestamp(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        member = await self._member(bus, group, topic)
        try:
            await bus.publish([message(topic, "order-1", n) for n in range(3)])
            await drain(member, 3)
            await asyncio.sleep(1.1)
            middle = datetime.now(UTC)
            await asyncio.sleep(0.1)
            await bus.publish([message(topic, "order-1", n) for n in range(3, 6)])
            await drain(member, 3)
            await member.rewind(ReplayPoint(timestamp=middle))
            replayed = await drain(member, 3)
            assert [int(d.message.value) for d in replayed] == [3, 4, 5]
        finally:
            await member.stop()

    async def test_a_group_can_be_rewound_to_the_beginning(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        member = await self._member(bus, group, topic)
        try:
            await bus.publish([message(topic, "order-1", n) for n in range(4)])
            await drain(member, 4)
            await member.rewind(ReplayPoint(offset=0))
            replayed = await drain(member, 4)
            assert [int(d.message.value) for d in replayed] == [0, 1, 2, 3]
        finally:
            await member.stop()

    async def test_lag_counts_what_the_group_has_not_committed(self, bus: Bus, topic: str) -> None:
        group = unique("g")
        member = await self._member(bus, group, topic)
        try:
            await bus.publish([message(topic, f"order-{k}", 0) for k in range(8)])
            received = await drain(member, 8, commit=False)
            await member.commit(received[:3])
            await asyncio.sleep(0.5)
            samples = await bus.lag(group, [topic])
            assert sum(s.lag for s in samples) == 5
            await member.commit(received)
            await asyncio.sleep(0.5)
            assert sum(s.lag for s in await bus.lag(group, [topic])) == 0
        finally:
            await member.stop()
