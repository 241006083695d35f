"""How the outbox relay finds committed rows: the in-process wake-up (with the partitions it
filled) and the poll, which still finds rows no wake-up announced (other processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.events.envelope import encode
from strowger.store.db import Database
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique
from tests.contract.runtime_contract import event, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")
    return db


@pytest.fixture
async def bus(database: Database) -> AsyncIterator[EmbeddedBus]:
    bus = EmbeddedBus("embedded://", database=database)
    await bus.start()
    await database.create_tables(OUTBOX_TABLES)
    yield bus
    await bus.stop()


async def _unpublished(database: Database) -> int:
    row = await database.fetchone("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
    return int(row[0]) if row else -1


async def _run(relay: OutboxRelay) -> asyncio.Task[None]:
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)  # past its first (full) round: from now on it waits
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_commit_tells_the_relay_which_partitions_it_filled() -> None:
    outbox = Outbox(partitions=16)
    assert outbox.take_committed() == set()
    outbox.wake({3, 5})
    outbox.wake({5, 9})
    assert outbox.take_committed() == {3, 5, 9}
    assert outbox.take_committed() == set()  # taken once


async def test_rows_committed_in_this_process_are_relayed_on_the_wake_up_without_waiting_for_the_poll(
    database: Database, bus: EmbeddedBus
) -> None:
    outbox, topic = Outbox(), unique("t")
    task = await _run(OutboxRelay(database, bus, outbox, poll_interval=3600))
    try:
        for n in range(3):  # several wake-ups, several entities (so several partitions)
            async with database.transaction() as tx:
                await outbox.add(tx, [encode(event(f"order-{n}-{k}", k), topic) for k in range(4)])

        async def relayed() -> bool:
            return await _unpublished(database) == 0

        await wait_until(relayed, "the woken relay to publish every committed row", timeout=30)
    finally:
        await _stop(task)


async def test_rows_another_process_committed_are_found_by_the_poll(
    database: Database, bus: EmbeddedBus
) -> None:
    ours, theirs, topic = Outbox(), Outbox(), unique("t")  # theirs: a writer that cannot wake our relay
    task = await _run(OutboxRelay(database, bus, ours, poll_interval=0.1))
    try:
        async with database.transaction() as tx:
            await theirs.add(tx, [encode(event(f"foreign-{k}", k), topic) for k in range(5)])
        async with database.transaction() as tx:  # a wake-up naming only our own partition
            await ours.add(tx, [encode(event("own", 0), topic)])

        async def relayed() -> bool:
            return await _unpublished(database) == 0

        await wait_until(relayed, "the poll to publish rows no wake-up announced", timeout=30)
    finally:
        await _stop(task)
