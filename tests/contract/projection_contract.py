"""The projection engine contract, run on each database backend (subclasses give ``database``).

Source of events: the real event store on the same database. The test
projection keeps, per stream, how many events it applied and a count of
anomalies (a version applied out of turn: a doubled or skipped event), so
every exactly-once claim is checked on the view itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strowger.bus.pacing import LoopPacer
from strowger.components.ordering.aggregate import ProductOrder
from strowger.ops.metrics import Metrics
from strowger.projections.engine import (
    EventStoreSource,
    Projection,
    ProjectionRunner,
    RebuildInProgress,
    Tables,
    ViewTable,
    rebuild,
    status,
)
from strowger.projections.orders import (
    CustomerProductsProjection,
    CustomerProductsView,
    OrderListProjection,
    OrderListView,
)
from strowger.store.aggregate import Repository
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import NewEvent, SqlEventStore, StoredEvent, open_event_store


class Boom(Exception):
    pass


class Totals(Projection):
    """Per stream: events applied, the running sum of ``amount``, and out-of-turn versions seen."""

    name: ClassVar[str] = "totals"
    tables: ClassVar[tuple[ViewTable, ...]] = ()
    fail_on: ClassVar[str | None] = None

    async def apply(self, tx: Transaction, event: StoredEvent, tables: Tables) -> None:
        if event.event_id == self.fail_on:
            raise Boom(event.event_id)
        tables = Tables({"t": tables[self.tables[0].name]})
        row = await tx.fetchone(
            tables.sql("SELECT last_version FROM {t} WHERE stream_id = ?"), (event.stream_id,)
        )
        anomaly = int((row[0] if row else 0) + 1 != event.version)
        await tx.execute(
            tables.sql(
                "INSERT INTO {t} (stream_id, applied, total, last_version, anomalies) VALUES (?, 1, ?, ?, ?) "
                "ON CONFLICT (stream_id) DO UPDATE SET applied = {t}.applied + 1, "
                "total = {t}.total + excluded.total, last_version = excluded.last_version, "
                "anomalies = {t}.anomalies + excluded.anomalies"
            ),
            (event.stream_id, int(event.payload["amount"]), event.version, anomaly),
        )


def totals_projection(version: int = 1) -> Totals:
    """A Totals projection with table names of its own (several per database in one test)."""
    suffix = uuid.uuid4().hex[:8]
    table = ViewTable(
        f"t{suffix}",
        sqlite="stream_id TEXT PRIMARY KEY, applied INTEGER, total INTEGER, last_version INTEGER, "
        "anomalies INTEGER",
        postgresql="stream_id TEXT PRIMARY KEY, applied BIGINT, total BIGINT, last_version BIGINT, "
        "anomalies BIGINT",
    )
    cls = type(
        f"Totals{suffix}", (Totals,), {"name": f"totals_{suffix}", "version": version, "tables": (table,)}
    )
    projection: Totals = cls()
    return projection


async def view_rows(database: Database, projection: Projection) -> list[tuple[Any, ...]]:
    """Every row of the projection's (first) view, through its stable name, sorted."""
    table = projection.tables[0].name
    rows = await database.fetchall(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
    return [tuple(row) for row in rows]


make_totals = totals_projection


async def append(store: SqlEventStore, stream: str, amounts: list[int]) -> list[StoredEvent]:
    version = await store.stream_version(stream)
    async with store.database.transaction() as tx:
        return await store.append(
            tx, stream, version, [NewEvent("Moved", {"amount": amount}) for amount in amounts]
        )


class ProjectionContract:
    @pytest.fixture
    def database(self) -> Database:
        raise NotImplementedError("subclasses provide the database")

    @pytest.fixture
    async def store(self, database: Database) -> SqlEventStore:
        store = open_event_store(database)
        await store.setup()
        return store

    @pytest.fixture
    def source(self, store: SqlEventStore) -> EventStoreSource:
        return EventStoreSource(store)

    def runner(
        self, projection: Projection, source: EventStoreSource, database: Database, **options: Any
    ) -> ProjectionRunner:
        return ProjectionRunner(projection, source, database, poll_interval=0.02, **options)

    # --- checkpoint and view move together ----------------------------------------------------

    async def test_catch_up_applies_every_event_once(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        await append(store, "a", [1, 2, 3])
        await append(store, "b", [10])
        runner = self.runner(projection, source, database, batch_size=2)
        assert await runner.catch_up() == 4
        assert await view_rows(database, projection) == [("a", 3, 6, 3, 0), ("b", 1, 10, 1, 0)]
        assert (await status(database, source, projection)).lag == 0

    async def test_failure_mid_batch_leaves_neither_view_nor_checkpoint(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        events = await append(store, "a", [1, 2, 3, 4])
        type(projection).fail_on = events[2].event_id
        runner = self.runner(projection, source, database, batch_size=10)
        with pytest.raises(Boom):
            await runner.run_once()
        assert await view_rows(database, projection) == []
        assert (await status(database, source, projection)).position == 0
        type(projection).fail_on = None
        assert await runner.catch_up() == 4
        assert await view_rows(database, projection) == [("a", 4, 10, 4, 0)]

    async def test_restart_resumes_from_the_checkpoint(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        await append(store, "a", [1, 1, 1])
        await self.runner(projection, source, database).catch_up()
        await append(store, "a", [5])
        restarted = self.runner(projection, source, database)
        assert await restarted.catch_up() == 1  # only the new event is read again
        assert await view_rows(database, projection) == [("a", 4, 8, 4, 0)]

    async def test_two_replicas_apply_each_event_once(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        for index in range(6):
            await append(store, f"s{index % 3}", [index] * 5)
        first, second = (self.runner(projection, source, database, batch_size=3) for _ in range(2))
        await first.setup()
        await asyncio.gather(first.catch_up(), second.catch_up())
        rows = await view_rows(database, projection)
        assert [(row[0], row[1], row[4]) for row in rows] == [("s0", 10, 0), ("s1", 10, 0), ("s2", 10, 0)]

    async def test_a_paced_runner_applies_batches_of_the_pacers_size_and_charges_their_time(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        await append(store, "a", [1] * 7)
        pacer = RecordingPacer(allowed=2)
        runner = self.runner(projection, source, database, batch_size=500, pacer=pacer)
        task = asyncio.create_task(runner.run())
        try:
            for _ in range(1000):  # 10 s at most
                if not (await status(database, source, projection)).lag:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert await view_rows(database, projection) == [("a", 7, 7, 7, 0)]
        assert pacer.asked[0] == (500, 0.0)  # nothing measured yet: the runner's own size is offered
        assert all(seconds > 0 for _, seconds in pacer.asked[1:4])  # then the last batch's cost
        assert len(pacer.charged) == 4  # 2 + 2 + 2 + 1: every batch's time counted against the share
        assert pacer.turns >= 3  # and a turn through the pacer after each full batch

    # --- lag --------------------------------------------------------------------------------

    async def test_lag_is_reported(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        metrics = Metrics()
        runner = self.runner(projection, source, database, metrics=metrics)
        await runner.setup()
        await append(store, "a", [1] * 7)
        assert (await status(database, source, projection)).lag == 7
        assert await runner.report_lag() == 7
        gauge = metrics.registry.get_sample_value("strowger_projection_lag", {"projection": projection.name})
        assert gauge == 7
        await runner.catch_up()
        assert (
            metrics.registry.get_sample_value("strowger_projection_lag", {"projection": projection.name}) == 0
        )

    async def test_lag_is_reported_while_the_runner_is_behind(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        measured: list[int] = []
        caught_up = asyncio.Event()

        class Recording(ProjectionRunner):
            async def report_lag(self) -> int:
                measured.append(await super().report_lag())
                if measured[-1] == 0:
                    caught_up.set()
                return measured[-1]

        projection = make_totals()
        runner = Recording(projection, source, database, batch_size=2, poll_interval=0.02, lag_interval=0)
        await runner.setup()
        await append(store, "a", [1] * 9)
        running = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(30):
                await caught_up.wait()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        # Full batches of 2 leave 7, 5, 3, 1 behind: each was on the gauge before the runner caught up.
        assert measured[:4] == [7, 5, 3, 1] and measured[-1] == 0

    # --- rebuild ----------------------------------------------------------------------------

    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(
        batches=st.lists(
            st.tuples(
                st.sampled_from(["x", "y", "z"]), st.lists(st.integers(-50, 50), min_size=1, max_size=4)
            ),
            min_size=1,
            max_size=8,
        ),
        batch_size=st.integers(1, 5),
    )
    async def test_rebuilt_view_equals_live_view(
        self,
        database: Database,
        store: SqlEventStore,
        source: EventStoreSource,
        batches: list[tuple[str, list[int]]],
        batch_size: int,
    ) -> None:
        projection = make_totals()
        prefix = uuid.uuid4().hex[:6]
        for stream, amounts in batches:
            await append(store, f"{prefix}-{stream}", amounts)
        await self.runner(projection, source, database, batch_size=batch_size).catch_up()
        live = await view_rows(database, projection)
        report = await rebuild(database, source, projection, batch_size=batch_size)
        assert report.new_generation == 2 and report.old_generation == 1
        assert await view_rows(database, projection) == live
        assert all(row[4] == 0 for row in live)

    async def test_rebuild_while_events_keep_arriving(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        runner = self.runner(projection, source, database, batch_size=20)
        await append(store, "w0", [1] * 30)
        live_task = asyncio.create_task(runner.run())
        stop = asyncio.Event()
        written: dict[str, int] = {"w0": 30}

        async def writer() -> None:
            index = 0
            while not stop.is_set():
                stream = f"w{index % 4}"
                await append(store, stream, [1, 1])
                written[stream] = written.get(stream, 0) + 2
                runner.notify()
                index += 1
                await asyncio.sleep(0.002)

        writing = asyncio.create_task(writer())
        try:
            report = await rebuild(database, source, projection, batch_size=7)
            await asyncio.sleep(0.05)
        finally:
            stop.set()
            await writing
        try:
            for _ in range(200):  # let the live runner reach the head
                if (await status(database, source, projection)).lag == 0:
                    break
                await asyncio.sleep(0.02)
            assert not live_task.done(), live_task.exception()  # the live runner never crashed
        finally:
            live_task.cancel()
            await asyncio.gather(live_task, return_exceptions=True)
        assert report.new_generation == 2
        rows = await view_rows(database, projection)
        assert {row[0]: row[1] for row in rows} == written  # nothing lost, nothing doubled
        assert all(row[4] == 0 for row in rows)  # and each in its turn
        tables = await _tables(database)
        assert f"{projection.tables[0].name}_g1" not in tables  # the old generation is gone

    async def test_a_second_rebuild_is_refused_while_one_is_building(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals()
        await append(store, "a", [1] * 5)
        await self.runner(projection, source, database).catch_up()
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow_progress_rebuild() -> None:
            original = source.read

            async def slow_read(after: int, limit: int) -> list[StoredEvent]:
                started.set()
                await release.wait()
                return await original(after, limit)

            source.read = slow_read  # type: ignore[method-assign]
            try:
                await rebuild(database, source, projection, batch_size=2)
            finally:
                source.read = original  # type: ignore[method-assign]

        first = asyncio.create_task(slow_progress_rebuild())
        await started.wait()
        with pytest.raises(RebuildInProgress):
            await rebuild(database, EventStoreSource(source.store), projection)
        release.set()
        await first
        assert await view_rows(database, projection) == [("a", 5, 5, 5, 0)]

    async def test_a_new_version_is_rebuilt_when_the_runner_starts(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        projection = make_totals(version=1)
        await append(store, "a", [2, 2])
        await self.runner(projection, source, database).catch_up()
        type(projection).version = 2
        runner = self.runner(projection, source, database)
        task = asyncio.create_task(runner.run())
        try:
            for _ in range(200):
                current = await status(database, source, projection)
                if current.version == 2 and current.lag == 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert (current.version, current.generation) == (2, 2)
        assert await view_rows(database, projection) == [("a", 2, 4, 2, 0)]

    # --- the order views --------------------------------------------------------------------

    async def test_order_list_and_customer_products_follow_the_product_order(
        self, database: Database, store: SqlEventStore, source: EventStoreSource
    ) -> None:
        repository = Repository(store, ProductOrder)
        now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        body = {
            "relatedParty": [{"id": "C1", "name": "Ada", "role": "Customer"}],
            "productOrderItem": [
                {"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE", "name": "Fibre 1G"}},
                {"id": "2", "action": "add", "productOffering": {"id": "PO-TV", "name": "TV"}},
            ],
        }
        order = ProductOrder.place("O1", body, href="/po/O1", now=now, correlation_id="c1")
        other = ProductOrder.place(
            "O2", {**body, "relatedParty": []}, href="/po/O2", now=now, correlation_id="c2"
        )
        async with database.transaction() as tx:
            await repository.save(tx, order)
            await repository.save(tx, other)
        lists = self.runner(OrderListProjection(), source, database)
        products = self.runner(CustomerProductsProjection(), source, database)
        await lists.catch_up()
        await products.catch_up()
        view = OrderListView(database)
        [first] = await view.summaries(customer_id="C1")
        assert (first.state, first.customer_name, first.offerings) == (
            "acknowledged",
            "Ada",
            ("Fibre 1G", "TV"),
        )
        assert await CustomerProductsView(database).products("C1") == []

        order = await repository.load("O1")
        order.start_fulfilment(now)
        order.record_fulfilment(["1"], "completed", now)
        order.record_fulfilment(["2"], "failed", now)
        async with database.transaction() as tx:
            await repository.save(tx, order)
        await lists.catch_up()
        await products.catch_up()
        [done] = await view.summaries(state=["partial"])
        assert done.order_id == "O1" and done.completion_date is not None
        assert await view.get("O1") == (await repository.load("O1")).to_tmf()
        assert await view.count() == 2
        [product] = await CustomerProductsView(database).products("C1")
        assert (product.product_id, product.status, product.offering_name) == ("O1-1", "active", "Fibre 1G")

        before = await view_rows(database, OrderListProjection())
        await rebuild(database, source, OrderListProjection())
        assert await view_rows(database, OrderListProjection()) == before


async def _tables(database: Database) -> set[str]:
    if database.kind == "sqlite":
        rows = await database.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await database.fetchall("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {str(row[0]) for row in rows}


class RecordingPacer(LoopPacer):
    """A pacer allowing ``allowed`` events per batch, recording what the runner asked and spent."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed
        self.asked: list[tuple[int, float]] = []
        self.charged: list[float] = []
        self.turns = 0

    def batch_size(self, largest: int, seconds_per_event: float) -> int:
        self.asked.append((largest, seconds_per_event))
        return self.allowed

    def spent(self, seconds: float) -> None:
        self.charged.append(seconds)

    async def turn(self) -> None:
        self.turns += 1
        await asyncio.sleep(0)
