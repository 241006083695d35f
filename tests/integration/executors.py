"""A harness for the fulfilment executors: the real consumer runtime, outbox relay and embedded bus.

Tests play SOM: they publish command envelopes on the command topics and wait
for the replies (matched by ``causation_id`` = command id) that the executors
emit through the outbox and the relay publishes on the reply topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from strowger.bootstrap import OutboxSink
from strowger.bus.embedded import EmbeddedBus
from strowger.bus.runtime import Consumer, ConsumerRunner
from strowger.components.contract import CommandKind
from strowger.events.envelope import Category, Envelope, decode, encode
from strowger.store.db import Database
from strowger.store.deadletters import PARKED_TABLES
from strowger.store.inbox import INBOX_TABLES
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique

TIMEOUT = 15.0


def command(kind: CommandKind, payload: Mapping[str, Any], *, entity_key: str = "SO-1") -> Envelope:
    """A command as the saga engine sends it."""
    return Envelope(
        event_type=kind.name,
        payload=dict(payload),
        entity_key=entity_key,
        category=Category.COMMAND,
        correlation_id=f"corr-{entity_key}",
        producer="som",
    )


def retry_of(sent: Envelope) -> Envelope:
    """The saga's retry of a command: same body (so same requestId), a new command id."""
    return Envelope(
        event_type=sent.event_type,
        payload=sent.payload,
        entity_key=sent.entity_key,
        category=Category.COMMAND,
        correlation_id=sent.correlation_id,
        producer=sent.producer,
    )


class ExecutorWorld:
    """Runs executors' consumers on an embedded bus over ``database`` and collects what they publish."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.bus = EmbeddedBus("embedded://", database=database)
        self.outbox = Outbox()
        self.published: list[Envelope] = []
        self.runners: list[ConsumerRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    def sink(self, producer: str) -> OutboxSink:
        return OutboxSink(self.outbox, producer)

    async def start(self, consumers: list[Consumer], watch: tuple[str, ...]) -> None:
        await self.database.create_tables(OUTBOX_TABLES, INBOX_TABLES, PARKED_TABLES)
        await self.bus.start()
        relay = OutboxRelay(self.database, self.bus, self.outbox, poll_interval=0.05)
        self._spawn(relay.run())
        self._spawn(self._collect(watch))
        for consumer in consumers:
            runner = ConsumerRunner(consumer, self.bus, self.database, outbox=self.outbox, fetch_timeout=0.2)
            self.runners.append(runner)
            self._spawn(runner.run())
        for runner in self.runners:
            async with asyncio.timeout(TIMEOUT):
                await runner.started.wait()

    def _spawn(self, coroutine: Any) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def _collect(self, topics: tuple[str, ...]) -> None:
        member = self.bus.subscriber(unique("watcher"), topics)
        await member.start()
        try:
            while True:
                batch = await member.fetch(100, 0.2)
                self.published.extend(decode(delivery.message) for delivery in batch)
                if batch:
                    await member.commit(batch)
        finally:
            await member.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=TIMEOUT)
        assert not stuck, f"tasks did not stop when cancelled: {stuck}"
        await self.bus.stop()

    async def send(self, envelope: Envelope, topic: str) -> Envelope:
        await self.bus.publish([encode(envelope, topic)])
        return envelope

    def replies_to(self, sent: Envelope) -> list[Envelope]:
        return [envelope for envelope in self.published if envelope.causation_id == sent.event_id]

    async def reply_to(self, sent: Envelope, timeout: float = TIMEOUT) -> Envelope:
        """The (first) reply to ``sent``; fails the test if none comes within ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (replies := self.replies_to(sent)):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"no reply to {sent.event_type} {sent.event_id} within {timeout}s")
            await asyncio.sleep(0.05)
        return replies[0]

    async def settle(self, seconds: float = 0.5) -> None:
        """Give redeliveries time to (not) produce anything more."""
        await asyncio.sleep(seconds)

    def of_type(self, event_type: str) -> list[Envelope]:
        return [envelope for envelope in self.published if envelope.event_type == event_type]
