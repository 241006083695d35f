"""The runtime contract on the embedded bus over SQLite (the single-node platform)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.partitioning import partition_for
from strowger.bus.port import Bus, Delivery
from strowger.commands.dlq import dlq_app
from strowger.events.envelope import Message, encode
from strowger.ops.dlq_api import router as dlq_router
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.deadletters import PARKED_TABLES, Failure, ParkingLot, Status
from strowger.store.inbox import INBOX_TABLES, Inbox
from strowger.store.outbox import ADVISORY_LOCK_CLASS, OUTBOX_TABLES, Outbox, OutboxRelay, purge
from strowger.store.sqlite import SqliteDatabase
from tests.conftest import unique
from tests.contract.bus_contract import drain
from tests.contract.runtime_contract import RuntimeContract, event, wait_until

pytestmark = pytest.mark.integration


class TestRuntimeOnEmbeddedSqlite(RuntimeContract):
    @pytest.fixture
    async def database(self, sqlite_db: Database) -> AsyncIterator[Database]:
        yield sqlite_db

    @pytest.fixture
    async def bus(self, database: Database) -> AsyncIterator[Bus]:
        bus = EmbeddedBus("embedded://", database=database)
        await bus.start()
        yield bus
        await bus.stop()


class TestRuntimeOnEmbeddedPostgres(RuntimeContract):
    """The same contract with everything in PostgreSQL: savepoints, advisory-lock relay, row locks."""

    @pytest.fixture
    async def database(self, postgres_db: Database) -> AsyncIterator[Database]:
        yield postgres_db

    @pytest.fixture
    async def bus(self, database: Database) -> AsyncIterator[Bus]:
        bus = EmbeddedBus("embedded://", database=database)
        await bus.start()
        yield bus
        await bus.stop()


# The outbox relay against an external bus (the log in another database), on PostgreSQL ---------


async def _read_all(bus: EmbeddedBus, topic: str, count: int) -> list[Message]:
    member = bus.subscriber(unique("reader"), [topic])
    await member.start()
    try:
        return [d.message for d in await drain(member, count)]
    finally:
        await member.stop()


async def _drained(database: Database) -> bool:
    row = await database.fetchone("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
    return row is not None and row[0] == 0


async def test_concurrent_relays_keep_each_entity_in_order(
    postgres_db: Database, external_bus: EmbeddedBus
) -> None:
    await postgres_db.create_tables(OUTBOX_TABLES)
    topic, outbox = unique("t"), Outbox()
    entities = [f"order-{k}" for k in range(6)]
    relays = [
        OutboxRelay(postgres_db, external_bus, outbox, batch_size=7, poll_interval=0.1) for _ in range(3)
    ]
    relaying = [asyncio.create_task(relay.run()) for relay in relays]

    async def produce(entity: str) -> None:
        for seq in range(15):  # one entity's transactions are sequential, as its aggregate enforces
            async with postgres_db.transaction() as tx:
                await outbox.add(tx, [encode(event(entity, seq), topic)])

    try:
        await asyncio.gather(*(produce(entity) for entity in entities))
        await wait_until(lambda: _drained(postgres_db), "the relays to drain the outbox")
    finally:
        for task in relaying:
            task.cancel()
        await asyncio.gather(*relaying, return_exceptions=True)
    messages = await _read_all(external_bus, topic, 90)
    for entity in entities:
        seqs = [orjson.loads(m.value)["event"]["thing"]["seq"] for m in messages if m.key == entity]
        assert seqs == list(range(15)), entity


async def test_a_row_committed_out_of_id_order_is_not_skipped(
    postgres_db: Database, external_bus: EmbeddedBus
) -> None:
    await postgres_db.create_tables(OUTBOX_TABLES)
    topic, outbox = unique("t"), Outbox()
    relay = OutboxRelay(postgres_db, external_bus, outbox)
    early_open, late_done = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:  # takes the lower id, commits last
        async with postgres_db.transaction() as tx:
            await outbox.add(tx, [encode(event("order-a", 0), topic)])
            early_open.set()
            await late_done.wait()

    slow = asyncio.create_task(slow_writer())
    await early_open.wait()
    async with postgres_db.transaction() as tx:
        await outbox.add(tx, [encode(event("order-b", 0), topic)])
    assert await relay.relay_once() == 1  # publishes the higher id first
    late_done.set()
    await slow
    assert await relay.relay_once() == 1  # the lower id, committed later, is still found
    assert sorted(m.key for m in await _read_all(external_bus, topic, 2)) == ["order-a", "order-b"]


async def test_a_partition_claimed_by_one_relay_is_skipped_by_another(
    postgres_db: Database, external_bus: EmbeddedBus
) -> None:
    await postgres_db.create_tables(OUTBOX_TABLES)
    topic, outbox = unique("t"), Outbox()
    async with postgres_db.transaction() as tx:
        await outbox.add(tx, [encode(event("order-c", n), topic) for n in range(3)])
    partition = partition_for("order-c", outbox.partitions)
    async with postgres_db.transaction() as claim:
        await claim.fetchone(  # the relay's key: its class and this schema, then the partition
            "SELECT pg_advisory_xact_lock(hashtext(? || current_schema()), ?)",
            (f"{ADVISORY_LOCK_CLASS}:", partition),
        )
        assert await OutboxRelay(postgres_db, external_bus, outbox).relay_once() == 0
    assert await OutboxRelay(postgres_db, external_bus, outbox).relay_once() == 3


async def test_retention_purges_old_rows_on_sqlite(sqlite_db: Database, external_bus: EmbeddedBus) -> None:
    await _retention_purges_published_outbox_rows_and_old_inbox_rows(sqlite_db, external_bus)


async def test_retention_purges_old_rows_on_postgres(
    postgres_db: Database, external_bus: EmbeddedBus
) -> None:
    await _retention_purges_published_outbox_rows_and_old_inbox_rows(postgres_db, external_bus)


async def _retention_purges_published_outbox_rows_and_old_inbox_rows(
    database: Database, external_bus: EmbeddedBus
) -> None:
    await database.create_tables(OUTBOX_TABLES, INBOX_TABLES)
    outbox, inbox = Outbox(), Inbox()
    async with database.transaction() as tx:
        await outbox.add(tx, [encode(event("order-d", n), unique("t")) for n in range(3)])
        assert await inbox.record(tx, "c", "recent")
        await tx.execute("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('c', 'old', 0)")
    await OutboxRelay(database, external_bus, outbox).relay_once()
    async with database.transaction() as tx:  # two of the three were published long ago
        await tx.execute("UPDATE outbox SET published_at = 1 WHERE id IN (SELECT id FROM outbox LIMIT 2)")
    assert await purge(database, older_than=timedelta(days=1)) == (2, 1)
    assert await database.fetchall("SELECT event_id FROM inbox") == [("recent",)]


# The DLQ's operator surfaces: CLI and HTTP ---------------------------------------------------


async def _seed_dead_letters(database: Database) -> list[int]:
    """Two dead letters for consumer "billing" (order-1 has one event waiting behind it)."""
    await database.create_tables(PARKED_TABLES)
    lot = ParkingLot()
    topic = "bss.ordering.events"
    async with database.transaction() as tx:
        for n, (entity, status) in enumerate(
            [("order-1", Status.DEAD), ("order-2", Status.DEAD), ("order-1", Status.BLOCKED)]
        ):
            delivery = Delivery(
                encode(event(entity, n), topic), partition=0, offset=n, timestamp=datetime.now(UTC)
            )
            failure = Failure.of(KeyError("tariff")) if status is Status.DEAD else None
            await lot.park(tx, "billing", delivery, entity_key=entity, status=status, failure=failure)
    rows = await database.fetchall("SELECT id FROM parked WHERE status = 'dead' ORDER BY id")
    return [int(row[0]) for row in rows]


def test_the_dlq_command_lists_shows_replays_and_discards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("STROWGER_DATABASE_URL", url)
    monkeypatch.setenv("STROWGER_CONFIG", str(tmp_path / "absent.toml"))

    async def seed() -> list[int]:
        async with SqliteDatabase(url) as database:
            return await _seed_dead_letters(database)

    first, second = asyncio.run(seed())
    cli = CliRunner()
    listed = cli.invoke(dlq_app, ["list", "--entity", "order-1"])
    assert listed.exit_code == 0, listed.output
    assert "1 dead letter(s)" in listed.output and "KeyError" in listed.output

    shown = cli.invoke(dlq_app, ["show", str(first)])
    assert shown.exit_code == 0, shown.output
    assert '"waitingBehind": 1' in shown.output and "KeyError" in shown.output
    assert cli.invoke(dlq_app, ["show", "999"]).exit_code == 1

    dry = cli.invoke(dlq_app, ["replay", "--consumer", "billing", "--dry-run"])
    assert dry.exit_code == 0 and "would replay 2" in dry.output
    done = cli.invoke(dlq_app, ["replay", str(first)])
    assert done.exit_code == 0 and "replayed 1" in done.output
    assert "replayed 0" in cli.invoke(dlq_app, ["replay", str(first)]).output  # no longer dead

    assert cli.invoke(dlq_app, ["discard", str(second), "--yes"]).exit_code == 0
    assert cli.invoke(dlq_app, ["discard", str(second), "--yes"]).exit_code == 1
    assert "0 dead letter(s)" in cli.invoke(dlq_app, ["list"]).output
    assert cli.invoke(dlq_app, ["list", "--older-than", "soon"]).exit_code == 2


async def test_the_dlq_api_lists_shows_replays_and_discards(sqlite_db: Database) -> None:
    first, second = await _seed_dead_letters(sqlite_db)
    app = FastAPI()
    app.state.platform = SimpleNamespace(database=sqlite_db, settings=Settings(component="all"))
    app.include_router(dlq_router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        listed = (await client.get("/dlq", params={"consumer": "billing", "errorType": "KeyError"})).json()
        assert [letter["id"] for letter in listed] == [first, second]
        assert (await client.get("/dlq", params={"entityKey": "order-2"})).json()[0]["id"] == second

        shown = (await client.get(f"/dlq/{first}")).json()
        assert shown["waitingBehind"] == 1 and "KeyError" in shown["traceback"]
        assert shown["headers"]["eventType"] == "ThingChangeEvent"
        assert (await client.get("/dlq/999")).status_code == 404

        dry = (await client.post("/dlq/replay", json={"consumer": "billing", "dryRun": True})).json()
        assert dry == {"dryRun": True, "count": 2, "ids": [first, second]}
        done = (await client.post("/dlq/replay", json={"ids": [first]})).json()
        assert done["count"] == 1
        assert (await client.post("/dlq/replay", json={"ids": [first]})).json()["count"] == 0

        assert (await client.post(f"/dlq/{second}/discard")).status_code == 200
        assert (await client.post(f"/dlq/{second}/discard")).status_code == 404
        assert (await client.post("/dlq/replay", json={"unknown": 1})).status_code == 422
        assert (await client.get("/dlq")).json() == []
