"""Projections: denormalised read models kept up to date from an ordered stream of events.

A :class:`Projection` folds events into tables it owns. A :class:`ProjectionRunner`
tails an :class:`EventSource` (normally the event store's global order) and applies
each batch of events in ONE transaction together with the projection's checkpoint,
so a crash leaves either the whole batch applied and the checkpoint moved, or
neither: every event takes effect exactly once.

Generations. A projection's tables are physical tables named ``<table>_g<N>``;
readers query the stable name ``<table>``, a SQL view over the live generation.
A rebuild (:func:`rebuild`) builds generation ``N+1`` from position 0 while the
live generation keeps serving reads and being updated, catches up with the live
one, then switches the views and the ``live`` flag in one transaction and drops
the old tables. Each generation has its own checkpoint row, and every checkpoint
move is a compare-and-set on (generation, state, position): a runner whose
generation was retired by a swap, or that raced another replica, rolls back its
batch and reloads, so no event is lost or applied twice across a swap.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar

from strowger.bus.pacing import LoopPacer, PacedBatches
from strowger.errors import ConcurrencyConflict, ConfigError, NotFound
from strowger.ops.metrics import Metrics
from strowger.store.db import Database, TableSet, Transaction
from strowger.store.eventstore import EventStore, StoredEvent

log = logging.getLogger("strowger.projections")

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

LIVE = "live"
BUILDING = "building"
RETIRED = "retired"

REGISTRY_TABLES = TableSet(
    "projections",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS strowger_projections (
            name TEXT NOT NULL, generation INTEGER NOT NULL, version INTEGER NOT NULL,
            state TEXT NOT NULL, position INTEGER NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, swapped_at TEXT, PRIMARY KEY (name, generation))""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS strowger_projections (
            name TEXT NOT NULL, generation INTEGER NOT NULL, version INTEGER NOT NULL,
            state TEXT NOT NULL, position BIGINT NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, swapped_at TEXT, PRIMARY KEY (name, generation))""",
    ],
)


def _identifier(name: str) -> str:
    """Table and projection names are spliced into SQL: only plain lowercase identifiers pass."""
    if not _IDENTIFIER.match(name):
        raise ConfigError("projection/table name", "lowercase letters, digits and _ (at most 41)", name)
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# --- what a projection declares ------------------------------------------------------------------


@dataclass(frozen=True)
class ViewTable:
    """One table a projection owns. ``columns`` is the body of CREATE TABLE per backend.

    ``indexes`` are ``(suffix, column list)`` pairs; each generation gets its own
    index names, since index names are global to a schema (PostgreSQL) or file (SQLite).
    """

    name: str
    sqlite: str
    postgresql: str
    indexes: Sequence[tuple[str, str]] = ()

    def __post_init__(self) -> None:
        _identifier(self.name)
        for suffix, _ in self.indexes:
            _identifier(suffix)


class Tables(Mapping[str, str]):
    """The physical names of a projection's tables in one generation (``tables["order_list"]``)."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = dict(names)

    def __getitem__(self, table: str) -> str:
        return self._names[table]

    def __iter__(self) -> Iterable[str]:  # type: ignore[override]
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def sql(self, template: str) -> str:
        """``template`` with each ``{table}`` replaced by this generation's physical name."""
        return template.format_map(self._names)


class Projection(abc.ABC):
    """A read model: a fold of events into tables (pure SQL in the caller's transaction).

    Subclasses set ``name``, ``version`` (raise it when the tables or the logic
    change: the runner then rebuilds the view from scratch), ``tables`` and,
    optionally, ``event_types`` (events of other types are skipped, though the
    checkpoint still moves past them).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[ViewTable, ...]]
    event_types: ClassVar[frozenset[str] | None] = None

    def wants(self, event: StoredEvent) -> bool:
        """Whether :meth:`apply` should see ``event`` (by type, unless overridden)."""
        return self.event_types is None or event.event_type in self.event_types

    @abc.abstractmethod
    async def apply(self, tx: Transaction, event: StoredEvent, tables: Tables) -> None:
        """Fold ``event`` into ``tables`` inside ``tx``.

        Must be deterministic (depend only on the event and the tables) so that a
        rebuild yields the same view as live updates. Raise to stop the runner:
        the batch rolls back and is retried, nothing is half applied.
        """

    def physical(self, generation: int) -> Tables:
        return Tables({table.name: f"{table.name}_g{generation}" for table in self.tables})

    def ddl(self, kind: str, generation: int) -> list[str]:
        """CREATE statements for this generation's tables and indexes."""
        names = self.physical(generation)
        statements = []
        for table in self.tables:
            body = table.sqlite if kind == "sqlite" else table.postgresql
            statements.append(f"CREATE TABLE IF NOT EXISTS {names[table.name]} ({body})")
            for suffix, columns in table.indexes:
                physical = names[table.name]
                statements.append(f"CREATE INDEX IF NOT EXISTS {physical}_{suffix} ON {physical} ({columns})")
        return statements


# --- where events come from ----------------------------------------------------------------------


class EventSource(abc.ABC):
    """An ordered, replayable sequence of events with increasing positions."""

    @abc.abstractmethod
    async def read(self, after: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events after position ``after``, in position order.

        Must never later reveal an event below a position it has returned.
        """

    @abc.abstractmethod
    async def head(self) -> int:
        """The position of the newest event (0 if there is none)."""


class EventStoreSource(EventSource):
    """The event store's global order (safe against out-of-order commits, see store/eventstore.py)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def read(self, after: int, limit: int) -> list[StoredEvent]:
        return await self.store.read_all(after, limit)

    async def head(self) -> int:
        row = await self.store.database.fetchone("SELECT max(position) FROM strowger_events")
        return int(row[0]) if row and row[0] is not None else 0


# --- the generations registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    version: int
    state: str
    position: int
    updated_at: str = ""
    swapped_at: str | None = None


class _Moved(ConcurrencyConflict):
    """The checkpoint row is no longer where this runner left it (a swap, or another replica)."""


_COLUMNS = "name, generation, version, state, position, updated_at, swapped_at"


def _generation(row: Sequence[object]) -> Generation:
    return Generation(
        str(row[0]),
        int(row[1]),  # type: ignore[call-overload]
        int(row[2]),  # type: ignore[call-overload]
        str(row[3]),
        int(row[4]),  # type: ignore[call-overload]
        str(row[5]),
        None if row[6] is None else str(row[6]),
    )


async def generations(reader: Transaction, name: str) -> list[Generation]:
    rows = await reader.fetchall(
        f"SELECT {_COLUMNS} FROM strowger_projections WHERE name = ? ORDER BY generation",  # noqa: S608
        (name,),
    )
    return [_generation(row) for row in rows]


async def _find(reader: Transaction, name: str, state: str, *, lock: bool = False) -> Generation | None:
    sql = f"SELECT {_COLUMNS} FROM strowger_projections WHERE name = ? AND state = ?"  # noqa: S608
    row = await reader.fetchone(sql + (" FOR UPDATE" if lock else ""), (name, state))
    return None if row is None else _generation(row)


async def _create_views(tx: Transaction, projection: Projection, generation: int) -> None:
    """Point every stable view name at ``generation``'s tables (inside the caller's transaction)."""
    names = projection.physical(generation)
    for table in projection.tables:
        await tx.execute(f"DROP VIEW IF EXISTS {table.name}")
        await tx.execute(f"CREATE VIEW {table.name} AS SELECT * FROM {names[table.name]}")  # noqa: S608


async def _drop_tables(database: Database, projection: Projection, generation: int) -> None:
    async with database.transaction() as tx:
        for physical in projection.physical(generation).values():
            await tx.execute(f"DROP TABLE IF EXISTS {physical}")


async def ensure_live(database: Database, projection: Projection) -> Generation:
    """The live generation; on first use, generation 1 with empty tables and the views over them."""
    _identifier(projection.name)
    await database.create_tables(REGISTRY_TABLES)
    async with database.transaction() as tx:
        live = await _find(tx, projection.name, LIVE)
        if live is not None:
            return live
        now = _now()
        created = await tx.execute(
            "INSERT INTO strowger_projections (name, generation, version, state, position, created_at, "
            "updated_at) VALUES (?, 1, ?, ?, 0, ?, ?) ON CONFLICT (name, generation) DO NOTHING",
            (projection.name, projection.version, LIVE, now, now),
        )
        if created != 1:
            # Another process created it between our look and our insert (READ COMMITTED: the
            # insert waited for its commit, so a new statement sees its row).
            live = await _find(tx, projection.name, LIVE)
            if live is None:
                raise ConcurrencyConflict(f"projection {projection.name} has no live generation")
            return live
        for statement in projection.ddl(database.kind, 1):
            await tx.execute(statement)
        await _create_views(tx, projection, 1)
        return Generation(projection.name, 1, projection.version, LIVE, 0, now)


async def advance(
    database: Database,
    source: EventSource,
    projection: Projection,
    generation: Generation,
    *,
    limit: int,
    to_position: int | None = None,
) -> tuple[Generation, int]:
    """Apply the next batch to ``generation``; returns the generation as moved and the events read.

    The checkpoint moves by compare-and-set BEFORE the batch is applied, so on
    PostgreSQL the row lock also serialises this batch with a concurrent swap
    or replica; raises :class:`_Moved` (the transaction rolls back) if it lost.
    """
    events = await source.read(generation.position, limit)
    if to_position is not None:
        events = [event for event in events if event.position <= to_position]
    if not events:
        return generation, 0
    moved = replace(generation, position=events[-1].position, updated_at=_now())
    async with database.transaction() as tx:
        await _move_checkpoint(tx, generation, moved)
        await _apply(tx, projection, generation.generation, events)
    return moved, len(events)


async def _move_checkpoint(tx: Transaction, before: Generation, after: Generation) -> None:
    changed = await tx.execute(
        "UPDATE strowger_projections SET position = ?, updated_at = ? "
        "WHERE name = ? AND generation = ? AND state = ? AND position = ?",
        (after.position, after.updated_at, before.name, before.generation, before.state, before.position),
    )
    if changed != 1:
        raise _Moved(f"projection {before.name} generation {before.generation} moved on")


async def _apply(
    tx: Transaction, projection: Projection, generation: int, events: Sequence[StoredEvent]
) -> None:
    tables = projection.physical(generation)
    for event in events:
        if projection.wants(event):
            await projection.apply(tx, event, tables)


# --- the live runner -----------------------------------------------------------------------------


class ProjectionRunner:
    """Keeps one projection's live generation up to date; one ``run()`` per process is enough.

    It polls every ``poll_interval`` seconds and wakes at once on :meth:`notify`
    (call it after appending events, e.g. from ``tx.on_commit``). Several
    replicas may run it: the checkpoint's compare-and-set lets one apply each batch.
    With a ``pacer`` (SQLite, where its work runs on the loop HTTP requests are served on)
    it is background work like the consumers: while requests are served its batches are
    sized to the pacer's budget and count against the consumers' share of the loop (a
    batch of 500 orders held the loop for up to 160 ms, every half second, under load).
    """

    def __init__(
        self,
        projection: Projection,
        source: EventSource,
        database: Database,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        metrics: Metrics | None = None,
        lag_interval: float = 1.0,
        pacer: LoopPacer | None = None,
    ) -> None:
        self.projection = projection
        self.source = source
        self.database = database
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.metrics = metrics
        # While behind, the lag is measured at most this often (it costs a read of the head).
        self.lag_interval = lag_interval
        self._lag_measured_at = float("-inf")
        self.pacer = pacer
        self._wake = asyncio.Event()
        self._live: Generation | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    def notify(self) -> None:
        """New events may be there: poll now instead of at the next interval."""
        self._wake.set()

    async def setup(self) -> Generation:
        self._live = await ensure_live(self.database, self.projection)
        return self._live

    async def _reload(self) -> Generation:
        async with self.database.snapshot() as reader:
            live = await _find(reader, self.projection.name, LIVE)
        if live is None:
            raise NotFound(f"projection {self.projection.name} has no live generation")
        self._live = live
        return live

    async def run_once(self, limit: int | None = None) -> int:
        """Apply one batch (``limit`` events, default ``batch_size``) to the live generation;
        returns how many events it read (0: caught up)."""
        live = self._live or await self.setup()
        try:
            self._live, count = await advance(
                self.database, self.source, self.projection, live, limit=limit or self.batch_size
            )
        except _Moved:
            await self._reload()
            return await self.run_once(limit)
        return count

    async def catch_up(self) -> int:
        """Apply batches until the live generation reaches the source's head; returns events read."""
        total = 0
        while count := await self.run_once():
            total += count
        await self.report_lag()
        return total

    async def report_lag(self) -> int:
        """Events of the source the live generation has not applied yet (also set on the gauge)."""
        self._lag_measured_at = asyncio.get_running_loop().time()
        lag = max((await self.source.head()) - (self._live.position if self._live else 0), 0)
        if self.metrics is not None:
            self.metrics.projection_lag.labels(projection=self.projection.name).set(lag)
        return lag

    async def _report_lag_while_behind(self) -> None:
        """The lag matters most while the runner is behind: measure it between full batches too."""
        if asyncio.get_running_loop().time() - self._lag_measured_at >= self.lag_interval:
            await self.report_lag()

    async def run(self) -> None:
        """Tail the source for ever (rebuilding first if the code's version is newer than the view's)."""
        live = await self.setup()
        if live.version != self.projection.version:
            log.info(
                "projection %s: version %s -> %s, rebuilding",
                self.name,
                live.version,
                self.projection.version,
            )
            await rebuild(self.database, self.source, self.projection, batch_size=self.batch_size)
            await self._reload()
        paced = PacedBatches(self.pacer) if self.pacer is not None else None  # requests first
        while True:
            if paced is None:
                limit = self.batch_size
                count = await self.run_once(limit)
            else:
                count, limit = await paced.run(self.batch_size, self.run_once)
            if count >= limit:
                await self._report_lag_while_behind()
                # More is waiting: no pause, but one turn of the event loop (SQLite work never
                # suspends: a catch-up would otherwise hold the whole process until it ends).
                if self.pacer is None:
                    await asyncio.sleep(0)
                continue
            await self.report_lag()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    self.poll_interval
                ):  # not wait_for: it can swallow a cancel (3.11)
                    await self._wake.wait()
            self._wake.clear()


# --- rebuild while running -----------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildReport:
    name: str
    old_generation: int | None
    new_generation: int
    position: int
    events_read: int


class RebuildInProgress(ConcurrencyConflict):
    """Another rebuild of the same projection is building a generation (or crashed while doing so)."""


async def _begin_build(database: Database, projection: Projection, *, takeover: bool) -> Generation:
    async with database.transaction() as tx:
        existing = await generations(tx, projection.name)
        building = [g for g in existing if g.state == BUILDING]
        if building and not takeover:
            raise RebuildInProgress(
                f"projection {projection.name} already has generation {building[0].generation} building "
                "(another rebuild is running, or one crashed: rebuild with takeover to start over)"
            )
        number = max((g.generation for g in existing), default=0) + 1
        now = _now()
        await tx.execute(
            "INSERT INTO strowger_projections (name, generation, version, state, position, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
            (projection.name, number, projection.version, BUILDING, now, now),
        )
        for stale in building:  # takeover: the abandoned build is forgotten
            await tx.execute(
                "UPDATE strowger_projections SET state = ? WHERE name = ? AND generation = ?",
                (RETIRED, projection.name, stale.generation),
            )
        for statement in projection.ddl(database.kind, number):
            await tx.execute(statement)
    for stale in building:
        await _drop_tables(database, projection, stale.generation)
    return Generation(projection.name, number, projection.version, BUILDING, 0, now)


async def _swap(
    database: Database, source: EventSource, projection: Projection, building: Generation, *, max_gap: int
) -> Generation | None:
    """Make ``building`` live if it can catch up with the live generation inside this transaction.

    The live checkpoint row is locked (PostgreSQL) or the writer lock held (SQLite),
    so the live runner cannot move meanwhile; the few events it applied that the
    new generation has not are applied here. Returns the retired generation (or
    None if there was none); raises :class:`_Behind` if the gap is too wide.
    """
    lock = database.kind == "postgresql"
    async with database.transaction() as tx:
        live = await _find(tx, projection.name, LIVE, lock=lock)
        if live is not None and live.position > building.position:
            if live.position - building.position > max_gap:
                raise _Behind(live.position)
            events = await source.read(building.position, live.position - building.position)
            events = [event for event in events if event.position <= live.position]
            if events:
                moved = replace(building, position=events[-1].position, updated_at=_now())
                await _move_checkpoint(tx, building, moved)
                await _apply(tx, projection, building.generation, events)
                building = moved
            if building.position < live.position:  # the source could not return them all
                raise _Behind(live.position)
        now = _now()
        if live is not None:
            await tx.execute(
                "UPDATE strowger_projections SET state = ?, updated_at = ? WHERE name = ? AND generation = ?",
                (RETIRED, now, projection.name, live.generation),
            )
        changed = await tx.execute(
            "UPDATE strowger_projections SET state = ?, updated_at = ?, swapped_at = ? "
            "WHERE name = ? AND generation = ? AND state = ?",
            (LIVE, now, now, projection.name, building.generation, BUILDING),
        )
        if changed != 1:
            raise RebuildInProgress(f"generation {building.generation} of {projection.name} was taken over")
        await _create_views(tx, projection, building.generation)
    return live


class _Behind(Exception):
    def __init__(self, live_position: int) -> None:
        super().__init__(f"live generation is at {live_position}")
        self.live_position = live_position


async def rebuild(
    database: Database,
    source: EventSource,
    projection: Projection,
    *,
    batch_size: int = 500,
    takeover: bool = False,
    progress: Callable[[Generation], None] | None = None,
) -> RebuildReport:
    """Rebuild ``projection`` from position 0 into a new generation and swap it in, while it runs.

    The live view keeps serving reads and following new events throughout; only
    the final swap (a handful of statements) briefly holds the live checkpoint.
    """
    await ensure_live(database, projection)
    building = await _begin_build(database, projection, takeover=takeover)
    events_read = 0
    while True:
        building, count = await advance(database, source, projection, building, limit=batch_size)
        events_read += count
        if progress is not None:
            progress(building)
        if count >= batch_size:
            continue
        try:
            retired = await _swap(database, source, projection, building, max_gap=batch_size)
        except _Behind:
            continue  # the live runner ran ahead while we caught up: one more lap
        break
    async with database.snapshot() as reader:
        now_live = await _find(reader, projection.name, LIVE)
    if retired is not None:
        await _drop_tables(database, projection, retired.generation)
    assert now_live is not None
    return RebuildReport(
        projection.name,
        retired.generation if retired else None,
        now_live.generation,
        now_live.position,
        events_read,
    )


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    version: int
    generation: int | None
    position: int
    head: int
    building: Generation | None
    updated_at: str

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


async def status(database: Database, source: EventSource, projection: Projection) -> ProjectionStatus:
    """Checkpoint, head and lag of ``projection`` (its live generation, and any build in progress)."""
    await database.create_tables(REGISTRY_TABLES)
    async with database.snapshot() as reader:
        found = await generations(reader, projection.name)
    head = await source.head()
    live = next((g for g in found if g.state == LIVE), None)
    building = next((g for g in found if g.state == BUILDING), None)
    return ProjectionStatus(
        name=projection.name,
        version=live.version if live else projection.version,
        generation=live.generation if live else None,
        position=live.position if live else 0,
        head=head,
        building=building,
        updated_at=live.updated_at if live else "",
    )
