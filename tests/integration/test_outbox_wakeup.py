"""How the outbox relay finds committed rows: the in-process wake-up (with the partitions it
filled) and the poll, which still finds rows no wake-up announced (other processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.pacing import LoopPacer
from strowger.events.envelope import encode
from strowger.store.db import Database
from strowger.store.outbox import OUTBOX_TABLES, Outbox, OutboxRelay
from tests.conftest import unique
from tests.contract.projection_contract import RecordingPacer
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


async def _none_left(database: Database) -> bool:
    return await _unpublished(database) == 0


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


async def test_a_paced_relay_publishes_batches_of_the_pacers_size_and_charges_their_time(
    sqlite_db: Database,
) -> None:
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    await sqlite_db.create_tables(OUTBOX_TABLES)
    outbox, topic = Outbox(), unique("t")
    async with sqlite_db.transaction() as tx:
        await outbox.add(tx, [encode(event("order-1", n), topic) for n in range(7)])
    pacer = RecordingPacer(allowed=2)
    task = asyncio.create_task(OutboxRelay(sqlite_db, bus, outbox, pacer=pacer).run())
    try:
        await wait_until(lambda: _none_left(sqlite_db), "every row relayed")
    finally:
        await _stop(task)
        await bus.stop()
    assert pacer.asked[0] == (1000, 0.0)  # nothing measured yet: the relay's own size is offered
    assert all(seconds > 0 for _, seconds in pacer.asked[1:4])  # then the last batch's cost per row
    assert len(pacer.charged) == 4  # 2 + 2 + 2 + 1: every batch's time counted against the share
    assert pacer.turns >= 4  # a turn through the pacer before each batch


async def test_a_pacer_is_only_for_sqlite(postgres_db: Database) -> None:
    relay = OutboxRelay(
        postgres_db, EmbeddedBus("embedded://", database=postgres_db), Outbox(), pacer=LoopPacer()
    )
    assert relay.pacer is None  # PostgreSQL work suspends on I/O: the loop is free meanwhile
