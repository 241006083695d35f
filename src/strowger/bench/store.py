"""`strowger bench store`: Strowger's event store against the eventsourcing library.

Both run in the SAME process, on the SAME database (one SQLite file, or one
PostgreSQL database with a schema each), with the same workload and the same
kind of domain object, at the application level (aggregate -> events ->
serialisation -> SQL and back):

* ``append_1``: transactions appending 1 event to one of 100 aggregates,
* ``append_10``: transactions appending 10 events,
* ``load_50``: loads of an aggregate of 50 events (no snapshots on either side).

eventsourcing is synchronous; Strowger is asyncio, on uvloop as ``strowger serve``
runs it: each op is awaited in turn, so both measure one client's latency-bound
throughput.

Fairness. Each workload runs in ``rounds`` rounds that ALTERNATE between the
two sides (and alternate who goes first), so both see the same machine: on a
shared host another process's burst lands on both, not on whichever ran
second. Each figure is the rate of the median round (robust to a round a
burst slowed down); the mean over all rounds is reported beside it. On SQLite
both sides run WAL with ``synchronous=NORMAL`` (eventsourcing's connections
get Strowger's setting), each append is one transaction on both sides, and
neither side writes outbox rows or snapshots: in production Strowger's caller
adds its outbox rows to the same transaction, while eventsourcing's events
table is its own notification log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop
from rich.table import Table

from strowger.bench.machine import machine_info
from strowger.store.aggregate import Aggregate, DomainEvent, Repository
from strowger.store.db import Database
from strowger.store.eventstore import open_event_store
from strowger.store.postgres import PostgresDatabase
from strowger.store.sqlite import SqliteDatabase

Progress = Callable[[str, float], None]
WORKLOADS = ("append_1", "append_10", "load_50")
EVENTS_PER_APPEND = {"append_1": 1, "append_10": 10}
AGGREGATES = 100
LOAD_EVENTS = 50
DEFAULT_POSTGRES_URL = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
TARGET_RATIO = 2.0
DEFAULT_ROUNDS = 10
WARM_UP = 5  # operations per side before each workload's timed rounds


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


# -- the two sides -----------------------------------------------------------------------------------


class EventsourcingSide:
    """eventsourcing's ``Application`` (synchronous): one method call per operation."""

    def __init__(self, env: dict[str, str]) -> None:
        self.app, self.tally_type = _eventsourcing_app(env)
        self.tallies = [self.tally_type(owner="bench") for _ in range(AGGREGATES)]
        self.app.save(*self.tallies)
        self.loaded = self.tally_type(owner="bench")
        for _ in range(LOAD_EVENTS - 1):
            self.loaded.add(1)
        self.app.save(self.loaded)
        self.turn = 0

    def run(self, workload: str, operations: int) -> float:
        """Seconds taken by ``operations`` operations of ``workload``."""
        started = time.perf_counter()
        if workload == "load_50":
            for _ in range(operations):
                self.app.repository.get(self.loaded.id)
        else:
            events = EVENTS_PER_APPEND[workload]
            for _ in range(operations):
                tally = self.tallies[self.turn % AGGREGATES]
                self.turn += 1
                for _ in range(events):
                    tally.add(1)
                self.app.save(tally)
        return time.perf_counter() - started

    def check(self) -> None:
        if self.app.repository.get(self.loaded.id).version != LOAD_EVENTS:
            raise AssertionError("eventsourcing loaded the wrong aggregate")
        for tally in self.tallies:
            if self.app.repository.get(tally.id).total != tally.total:
                raise AssertionError("eventsourcing lost an append")

    def close(self) -> None:
        self.app.close()


class StrowgerSide:
    """Strowger's ``Repository`` over its event store: one transaction per append, as in production."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.turn = 0

    async def open(self) -> None:
        await self.database.open()
        store = open_event_store(self.database)
        await store.setup()
        self.repository = Repository(store, Tally, snapshot_every=None)
        self.tallies = [Tally.open(uuid.uuid4().hex, "bench") for _ in range(AGGREGATES)]
        async with self.database.transaction() as tx:
            for tally in self.tallies:
                await self.repository.save(tx, tally)
        self.loaded = Tally.open(uuid.uuid4().hex, "bench")
        for _ in range(LOAD_EVENTS - 1):
            self.loaded.add(1)
        async with self.database.transaction() as tx:
            await self.repository.save(tx, self.loaded)

    async def run(self, workload: str, operations: int) -> float:
        """Seconds taken by ``operations`` operations of ``workload``."""
        repository, database = self.repository, self.database
        started = time.perf_counter()
        if workload == "load_50":
            for _ in range(operations):
                await repository.load(self.loaded.id)
        else:
            events = EVENTS_PER_APPEND[workload]
            for _ in range(operations):
                tally = self.tallies[self.turn % AGGREGATES]
                self.turn += 1
                for _ in range(events):
                    tally.add(1)
                async with database.transaction() as tx:
                    await repository.save(tx, tally)
        return time.perf_counter() - started

    async def check(self) -> None:
        if (await self.repository.load(self.loaded.id)).version != LOAD_EVENTS:
            raise AssertionError("Strowger loaded the wrong aggregate")
        for tally in self.tallies:
            if (await self.repository.load(tally.id)).total != tally.total:
                raise AssertionError("Strowger lost an append")

    async def close(self) -> None:
        await self.database.close()


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


@dataclass
class Timings:
    """Seconds per round of each workload, for one side."""

    rounds: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in WORKLOADS})

    def figures(self, operations_per_round: int) -> dict[str, float]:
        """The median round's rate: robust to rounds another process on the machine slowed down."""
        return {
            name: _rate(operations_per_round, statistics.median(seconds))
            for name, seconds in self.rounds.items()
        }

    def overall(self, operations_per_round: int) -> dict[str, float]:
        """All operations over all the time (the mean rate, outliers included)."""
        return {
            name: _rate(operations_per_round * len(seconds), sum(seconds))
            for name, seconds in self.rounds.items()
        }


def _measure(
    eventsourcing: EventsourcingSide,
    strowger: StrowgerSide,
    runner: asyncio.Runner,
    operations_per_round: int,
    rounds: int,
    report: Progress,
) -> tuple[Timings, Timings]:
    """Alternate the two sides round by round, so both see the same machine (load, WAL, caches)."""
    es_timings, strowger_timings = Timings(), Timings()
    steps, done = len(WORKLOADS) * rounds, 0
    for workload in WORKLOADS:
        eventsourcing.run(workload, WARM_UP)  # caches, prepared statements, connections
        runner.run(strowger.run(workload, WARM_UP))
        for round_number in range(rounds):
            # Who goes first alternates too: neither side always inherits the other's WAL or checkpoint.
            if round_number % 2 == 0:
                es_timings.rounds[workload].append(eventsourcing.run(workload, operations_per_round))
                strowger_timings.rounds[workload].append(
                    runner.run(strowger.run(workload, operations_per_round))
                )
            else:
                strowger_timings.rounds[workload].append(
                    runner.run(strowger.run(workload, operations_per_round))
                )
                es_timings.rounds[workload].append(eventsourcing.run(workload, operations_per_round))
            done += 1
            report(f"{workload} round {round_number + 1}/{rounds}", done / steps)
    eventsourcing.check()
    runner.run(strowger.check())
    return es_timings, strowger_timings


def _run_both(
    es_env: dict[str, str],
    strowger_database: Database,
    operations_per_round: int,
    rounds: int,
    report: Progress,
) -> tuple[Timings, Timings]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        eventsourcing = EventsourcingSide(es_env)
        strowger = StrowgerSide(strowger_database)
        try:
            runner.run(strowger.open())
            return _measure(eventsourcing, strowger, runner, operations_per_round, rounds, report)
        finally:
            eventsourcing.close()
            runner.run(strowger.close())


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


def run_store_bench(
    db: str, iterations: int, progress: Progress | None = None, *, rounds: int = DEFAULT_ROUNDS
) -> dict[str, Any]:
    """Measure both libraries on ``db`` ("sqlite" or "postgres"); every figure is in ops/s.

    ``iterations`` operations per workload and side, in ``rounds`` alternating
    rounds. Returns ``{"db", "iterations", "rounds", "eventsourcing": {...},
    "strowger": {...}, "ratio": {...}, "mean": {...}, "events_per_s": {...},
    "target_ratio", "meets_target", "load_average", "machine"}``.
    """
    if db not in ("sqlite", "postgres"):
        raise ValueError(f"db must be 'sqlite' or 'postgres', got {db!r}")
    if rounds < 1 or iterations < rounds:
        raise ValueError(f"need 1 <= rounds <= iterations, got rounds={rounds}, iterations={iterations}")
    report = progress or (lambda description, fraction: None)
    per_round = iterations // rounds
    load_before = os.getloadavg()
    targets = _sqlite_targets() if db == "sqlite" else _postgres_targets()
    with targets as (es_env, strowger_database), _peer_durability(db):
        report("setting up", 0.0)
        es_timings, strowger_timings = _run_both(es_env, strowger_database(), per_round, rounds, report)
    eventsourcing, strowger = es_timings.figures(per_round), strowger_timings.figures(per_round)
    es_mean, strowger_mean = es_timings.overall(per_round), strowger_timings.overall(per_round)
    ratio = {name: round(strowger[name] / eventsourcing[name], 2) for name in WORKLOADS}
    return {
        "benchmark": "store",
        "db": db,
        "iterations": per_round * rounds,
        "rounds": rounds,
        "eventsourcing": eventsourcing,
        "strowger": strowger,
        "ratio": ratio,
        "mean": {
            "eventsourcing": es_mean,
            "strowger": strowger_mean,
            "ratio": {name: round(strowger_mean[name] / es_mean[name], 2) for name in WORKLOADS},
        },
        "events_per_s": {
            "eventsourcing_append_10": round(eventsourcing["append_10"] * 10, 1),
            "strowger_append_10": round(strowger["append_10"] * 10, 1),
        },
        "target_ratio": TARGET_RATIO,
        "meets_target": all(value >= TARGET_RATIO for value in ratio.values()),
        "load_average": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {**machine_info(), "cpu_count": os.cpu_count() or 0},
    }


def _peer_durability(db: str) -> contextlib.AbstractContextManager[None]:
    return _sqlite_synchronous_normal() if db == "sqlite" else contextlib.nullcontext()


def render_table(result: dict[str, Any]) -> Table:
    """The figures side by side, one row per workload."""
    table = Table(
        title=f"Event store on {result['db']}: {result['iterations']} ops per figure "
        f"in {result['rounds']} alternating rounds (median round)"
    )
    table.add_column("workload")
    table.add_column("eventsourcing ops/s", justify="right")
    table.add_column("Strowger ops/s", justify="right")
    table.add_column("Strowger / eventsourcing", justify="right")
    table.add_column("ratio of means", justify="right")
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
            f"{result['mean']['ratio'][name]:.2f}x",
        )
    return table
