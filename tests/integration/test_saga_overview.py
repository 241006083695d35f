"""The saga overview read model, fed from the saga log, on SQLite and PostgreSQL.

The toy saga of the saga contract runs through the real engine with a fake
clock (so durations are exact); the overview is caught up from the log.
"""

from __future__ import annotations

import asyncio

import pytest

from strowger.projections.engine import ProjectionRunner, rebuild
from strowger.projections.sagas import (
    SAGA_LOG_ORDER,
    SagaLogSource,
    SagaOverviewProjection,
    SagaOverviewView,
    percentile,
)
from strowger.saga import SAGA_TABLES, SagaEngine, SagaRegistry
from strowger.store.db import Database
from tests.contract.projection_contract import view_rows
from tests.contract.saga_contract import TOY, Clock, FakeSink, Harness

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")
    return db


@pytest.fixture
async def harness(database: Database) -> Harness:
    await database.create_tables(SAGA_TABLES, SAGA_LOG_ORDER)
    sink, clock = FakeSink(), Clock()
    return Harness(database, sink, clock, SagaEngine(SagaRegistry([TOY]), sink, clock=clock))


def runner(database: Database) -> ProjectionRunner:
    return ProjectionRunner(SagaOverviewProjection(), SagaLogSource(database), database, batch_size=7)


async def run_sagas(harness: Harness) -> None:
    """s-done completes in 30 s, s-late in 90 s, s-failed compensates, s-open waits on activate."""
    for saga_id, seconds in (("s-done", 10), ("s-late", 30)):
        await harness.start(saga_id, service=saga_id)
        for action in ("Reserve", "Activate", "Bill"):
            harness.clock.advance(seconds)
            assert await harness.reply(action)
    await harness.start("s-failed", service="s-failed")
    assert await harness.reply("Reserve")
    assert await harness.reply("Activate", "Failed", error="port down")
    assert await harness.reply("Release")
    await harness.start("s-open", service="s-open")
    assert await harness.reply("Reserve")


async def test_the_overview_of_running_finished_and_compensated_sagas(
    harness: Harness, database: Database
) -> None:
    await run_sagas(harness)
    overview = runner(database)
    await overview.setup()
    assert await overview.catch_up() > 0
    view = SagaOverviewView(database)

    assert await view.in_flight() == {("toy", "activate"): 1}
    assert await view.counts() == {("toy", "completed"): 2, ("toy", "failed"): 1, ("toy", "running"): 1}
    [durations] = await view.durations()
    assert (durations.saga_type, durations.count) == ("toy", 3)
    assert (durations.p50, durations.p99) == (30_000, 90_000)  # s-failed took no (fake) time at all
    [undone, started] = await view.compensations()
    assert (undone.saga_id, undone.step, undone.status) == ("s-failed", "reserve", "compensated")
    assert (started.status, started.step) == ("compensating", "activate")
    assert "port down" in started.reason
    document = await view.overview()
    assert document["inFlight"] == [{"sagaType": "toy", "step": "activate", "count": 1}]
    assert document["durations"][0]["p95Ms"] == 90_000
    assert await overview.report_lag() == 0

    # The saga still open goes on: the view follows; a rebuild from the log gives the same view.
    assert await harness.reply("Activate")  # the last Activate sent is s-open's
    await overview.catch_up()
    assert await view.in_flight() == {("toy", "bill"): 1}
    before = await view_rows(database, SagaOverviewProjection())
    await rebuild(database, SagaLogSource(database), SagaOverviewProjection())
    assert await view_rows(database, SagaOverviewProjection()) == before


async def test_a_log_line_committed_late_below_a_newer_one_is_not_skipped(postgres_db: Database) -> None:
    """PostgreSQL: id 1 is taken by a transaction that commits AFTER the one holding id 2."""
    await postgres_db.create_tables(SAGA_TABLES, SAGA_LOG_ORDER)
    source = SagaLogSource(postgres_db)
    insert = (
        "INSERT INTO saga_log (saga_id, at, step, before_status, after_status, reason) "
        "VALUES (?, now(), '', '', 'running', ?)"
    )
    slow_inserted, release = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        async with postgres_db.transaction() as tx:
            await tx.execute(insert, ("slow", "first id, late commit"))
            slow_inserted.set()
            await release.wait()

    task = asyncio.create_task(slow())
    await slow_inserted.wait()
    async with postgres_db.transaction() as tx:
        await tx.execute(insert, ("fast", "second id, early commit"))
    ids = await postgres_db.fetchall("SELECT saga_id, id FROM saga_log ORDER BY id")
    assert [row[0] for row in ids] == ["fast"]  # the slow line is not visible yet...
    assert await source.read(0, 100) == []  # ...and the fast one is held back behind it
    release.set()
    await task
    lines = await source.read(0, 100)
    assert [line.stream_id for line in lines] == ["slow", "fast"]
    assert lines[0].position < lines[1].position
    assert await source.read(lines[-1].position, 100) == []
    assert await source.head() == lines[-1].position
    resumed = await source.read(lines[0].position, 100)
    assert [line.stream_id for line in resumed] == ["fast"]


def test_percentiles_are_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert (percentile(ordered, 0.5), percentile(ordered, 0.95), percentile(ordered, 0.99)) == (50, 95, 99)
    assert percentile([7], 0.99) == 7
