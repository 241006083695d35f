"""`strowger bench store`: Strowger's event store against the eventsourcing library.

Both run in the SAME process, on the SAME database (one SQLite file, or one
PostgreSQL database with a schema each), with the same workload and the same
kind of domain object, at the application level (aggregate -> events ->
serialisation -> SQL and back):

* ``append_1``: transactions appending 1 event to one of 100 aggregates,
* ``append_10``: transactions appending 10 events,
* ``load_50``: loads of an aggregate of 50 events (no snapshots on either side).

eventsourcing is synchronous; Strowger is asyncio: each op is awaited in turn,
so both measure one client's latency-bound throughput.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rich.table import Table

from strowger.bench.machine import machine_info
from strowger.store.aggregate import Aggregate, DomainEvent, Repository
from strowger.store.db import Database
from strowger.store.eventstore import open_event_store
from strowger.store.postgres import PostgresDatabase
from strowger.store.sqlite import SqliteDatabase

Progress = Callable[[str, float], None]
WORKLOADS = ("append_1", "append_10", "load_50")
AGGREGATES = 100
LOAD_EVENTS = 50
DEFAULT_POSTGRES_URL = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
TARGET_RATIO = 2.0


# -- the same small domain on both sides -------------------------------------------------------------


@dataclass(frozen=True)
class Opened(DomainEvent):
    owner: str


@dataclass(frozen=True)
class Added(DomainEvent):
    amount: int


class Tally(Aggregate):
    event_types = (Opened, Added)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.total = 0

    @classmethod
    def open(cls, aggregate_id: str, owner: str) -> Tally:
        tally = cls(aggregate_id)
        tally.record(Opened(owner=owner))
        return tally

    def add(self, amount: int) -> None:
        self.record(Added(amount=amount))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case Opened(owner=owner):
                self.owner = owner
            case Added(amount=amount):
                self.total += amount


@functools.cache
def _eventsourcing_tally() -> Any:
    """eventsourcing's Tally (imported lazily: a dev dependency; defined once: it registers its topic)."""
    from eventsourcing.domain import Aggregate as EsAggregate
    from eventsourcing.domain import event

    class EsTally(EsAggregate):
        @event("Opened")
        def __init__(self, owner: str) -> None:
            self.owner = owner
            self.total = 0

        @event("Added")
        def add(self, amount: int) -> None:
            self.total += amount

    return EsTally


def _eventsourcing_app(env: dict[str, str]) -> Any:
    from eventsourcing.application import Application

    return Application(env=env), _eventsourcing_tally()


# -- timing ---------------------------------------------------------------------------------------------


def _rate(operations: int, seconds: float) -> float:
    return round(operations / seconds, 1) if seconds > 0 else 0.0


@contextmanager
def _sqlite_synchronous_normal() -> Iterator[None]:
    """Give eventsourcing's SQLite connections Strowger's durability setting while the bench runs.

    Both use WAL; Strowger sets ``synchronous=NORMAL`` (no fsync per commit; a
    power cut may lose the last commits, a process crash loses nothing), while
    eventsourcing keeps SQLite's default FULL. Without this the figures would
    compare fsyncs, not libraries.
    """
    from eventsourcing.sqlite import SQLiteConnectionPool

    create = SQLiteConnectionPool._create_connection

    def create_with_normal_sync(pool: Any) -> Any:
        connection = create(pool)
        connection._sqlite_conn.execute("PRAGMA synchronous = NORMAL")
        return connection

    SQLiteConnectionPool._create_connection = create_with_normal_sync  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]


def _run_eventsourcing(env: dict[str, str], iterations: int) -> dict[str, float]:
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        with _sqlite_synchronous_normal():
            return _measure_eventsourcing(env, iterations)
    return _measure_eventsourcing(env, iterations)


def _measure_eventsourcing(env: dict[str, str], iterations: int) -> dict[str, float]:
    app, es_tally = _eventsourcing_app(env)
    try:
        tallies = [es_tally(owner="bench") for _ in range(AGGREGATES)]
        app.save(*tallies)
        figures: dict[str, float] = {}
        for events in (1, 10):
            for tally in tallies[:5]:  # warm up caches and prepared statements
                tally.add(1)
                app.save(tally)
            started = time.perf_counter()
            for n in range(iterations):
                tally = tallies[n % AGGREGATES]
                for _ in range(events):
                    tally.add(1)
                app.save(tally)
            figures[f"append_{events}"] = _rate(iterations, time.perf_counter() - started)
        loaded = es_tally(owner="bench")
        for _ in range(LOAD_EVENTS - 1):
            loaded.add(1)
        app.save(loaded)
        for _ in range(5):
            app.repository.get(loaded.id)
        started = time.perf_counter()
        for _ in range(iterations):
            app.repository.get(loaded.id)
        figures["load_50"] = _rate(iterations, time.perf_counter() - started)
        if app.repository.get(loaded.id).version != LOAD_EVENTS:
            raise AssertionError("eventsourcing loaded the wrong aggregate")
        return figures
    finally:
        app.close()


async def _run_strowger(database: Database, iterations: int) -> dict[str, float]:
    await database.open()
    try:
        store = open_event_store(database)
        await store.setup()
        repository = Repository(store, Tally, snapshot_every=None)
        tallies = [Tally.open(uuid.uuid4().hex, "bench") for _ in range(AGGREGATES)]
        async with database.transaction() as tx:
            for tally in tallies:
                await repository.save(tx, tally)
        figures: dict[str, float] = {}
        for events in (1, 10):
            for tally in tallies[:5]:
                tally.add(1)
                async with database.transaction() as tx:
                    await repository.save(tx, tally)
            started = time.perf_counter()
            for n in range(iterations):
                tally = tallies[n % AGGREGATES]
                for _ in range(events):
                    tally.add(1)
                async with database.transaction() as tx:
                    await repository.save(tx, tally)
            figures[f"append_{events}"] = _rate(iterations, time.perf_counter() - started)
        loaded = Tally.open(uuid.uuid4().hex, "bench")
        for _ in range(LOAD_EVENTS - 1):
            loaded.add(1)
        async with database.transaction() as tx:
            await repository.save(tx, loaded)
        for _ in range(5):
            await repository.load(loaded.id)
        started = time.perf_counter()
        for _ in range(iterations):
            await repository.load(loaded.id)
        figures["load_50"] = _rate(iterations, time.perf_counter() - started)
        if (await repository.load(loaded.id)).version != LOAD_EVENTS:
            raise AssertionError("Strowger loaded the wrong aggregate")
        return figures
    finally:
        await database.close()


# -- the two databases ----------------------------------------------------------------------------------


@contextmanager
def _sqlite_targets() -> Iterator[tuple[dict[str, str], Callable[[], Database]]]:
    """One SQLite file shared by both libraries (each with its own tables)."""
    directory = tempfile.mkdtemp(prefix="strowger-bench-store-")
    path = os.path.join(directory, "bench.db")
    try:
        yield (
            {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path},
            lambda: SqliteDatabase(f"sqlite:///{path}"),
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _postgres_url() -> str:
    return os.environ.get("STROWGER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@contextmanager
def _postgres_targets() -> Iterator[tuple[dict[str, str], Callable[[], Database]]]:
    """One PostgreSQL database, a throw-away schema for each library."""
    import psycopg

    url = _postgres_url()
    parts = urlsplit(url)
    suffix = uuid.uuid4().hex[:8]
    es_schema, strowger_schema = f"bench_es_{suffix}", f"bench_strowger_{suffix}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{es_schema}"')
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_SCHEMA": es_schema,
    }
    try:
        yield env, lambda: PostgresDatabase(url, schema=strowger_schema)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            for schema in (es_schema, strowger_schema):
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the public surface ------------------------------------------------------------------------------


def run_store_bench(db: str, iterations: int, progress: Progress | None = None) -> dict[str, Any]:
    """Measure both libraries on ``db`` ("sqlite" or "postgres"); every figure is in ops/s.

    Returns ``{"db", "iterations", "eventsourcing": {...}, "strowger": {...},
    "ratio": {...}, "events_per_s": {...}, "target_ratio", "meets_target", "machine"}``.
    """
    if db not in ("sqlite", "postgres"):
        raise ValueError(f"db must be 'sqlite' or 'postgres', got {db!r}")
    report = progress or (lambda description, fraction: None)
    targets = _sqlite_targets() if db == "sqlite" else _postgres_targets()
    with targets as (es_env, strowger_database):
        report("eventsourcing", 0.0)
        eventsourcing = _run_eventsourcing(es_env, iterations)
        report("strowger", 0.5)
        strowger = asyncio.run(_run_strowger(strowger_database(), iterations))
        report("done", 1.0)
    ratio = {name: round(strowger[name] / eventsourcing[name], 2) for name in WORKLOADS}
    return {
        "benchmark": "store",
        "db": db,
        "iterations": iterations,
        "eventsourcing": eventsourcing,
        "strowger": strowger,
        "ratio": ratio,
        "events_per_s": {
            "eventsourcing_append_10": round(eventsourcing["append_10"] * 10, 1),
            "strowger_append_10": round(strowger["append_10"] * 10, 1),
        },
        "target_ratio": TARGET_RATIO,
        "meets_target": all(value >= TARGET_RATIO for value in ratio.values()),
        "machine": {**machine_info(), "cpu_count": os.cpu_count() or 0},
    }


def render_table(result: dict[str, Any]) -> Table:
    """The figures side by side, one row per workload."""
    table = Table(title=f"Event store on {result['db']} ({result['iterations']} ops per figure)")
    table.add_column("workload")
    table.add_column("eventsourcing ops/s", justify="right")
    table.add_column("Strowger ops/s", justify="right")
    table.add_column("Strowger / eventsourcing", justify="right")
    labels = {
        "append_1": "append 1 event",
        "append_10": "append 10 events",
        "load_50": "load 50-event aggregate",
    }
    for name in WORKLOADS:
        ratio = result["ratio"][name]
        colour = "green" if ratio >= result["target_ratio"] else "red"
        table.add_row(
            labels[name],
            f"{result['eventsourcing'][name]:,.0f}",
            f"{result['strowger'][name]:,.0f}",
            f"[{colour}]{ratio:.2f}x[/]",
        )
    return table
