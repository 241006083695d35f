"""The event store's contract: one base class, subclassed once per database backend.

A subclass provides the ``database`` fixture (an opened, empty database);
every test here then runs against it for real. See strowger.store.eventstore
for the guarantees.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strowger.errors import ConcurrencyConflict, NotFound
from strowger.store.aggregate import Aggregate, DomainEvent, Repository
from strowger.store.db import Database
from strowger.store.eventstore import EventStore, NewEvent, SqlEventStore, StoredEvent, open_event_store
from strowger.store.upcasting import Upcasters

# -- a small aggregate: enough state shapes (int, list, dict, str) to catch a lossy snapshot ----------


@dataclass(frozen=True)
class Opened(DomainEvent):
    owner: str


@dataclass(frozen=True)
class Added(DomainEvent):
    amount: int


@dataclass(frozen=True)
class Tagged(DomainEvent):
    tag: str
    schema_version = 2  # v1 had "label" instead of "tag": see upcast_tagged_v1


@dataclass(frozen=True)
class Closed(DomainEvent):
    reason: str


def upcast_tagged_v1(payload: dict[str, Any]) -> dict[str, Any]:
    return {"tag": payload.pop("label")}


class Tally(Aggregate):
    event_types = (Opened, Added, Tagged, Closed)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.total = 0
        self.tags: list[str] = []
        self.counts: dict[str, int] = {}
        self.status = "new"

    @classmethod
    def open(cls, aggregate_id: str, owner: str) -> Tally:
        tally = cls(aggregate_id)
        tally.record(Opened(owner=owner))
        return tally

    def add(self, amount: int) -> None:
        self.record(Added(amount=amount))

    def tag(self, tag: str) -> None:
        self.record(Tagged(tag=tag))

    def close(self, reason: str) -> None:
        self.record(Closed(reason=reason))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case Opened(owner=owner):
                self.owner, self.status = owner, "open"
            case Added(amount=amount):
                self.total += amount
                self.counts[str(amount % 3)] = self.counts.get(str(amount % 3), 0) + 1
            case Tagged(tag=tag):
                self.tags.append(tag)
            case Closed(reason=reason):
                self.status = f"closed:{reason}"

    def state(self) -> dict[str, Any]:
        return copy.deepcopy({"id": self.id, "version": self.version, **self.snapshot_state()})


def run_command(tally: Tally, command: tuple[str, Any]) -> None:
    name, argument = command
    getattr(tally, name)(argument)


COMMANDS = st.one_of(
    st.tuples(st.just("add"), st.integers(-1000, 1000)),
    st.tuples(st.just("tag"), st.text(max_size=8)),
    st.tuples(st.just("close"), st.sampled_from(["done", "fraud", ""])),
)


def new_id() -> str:
    return uuid.uuid4().hex


class EventStoreContract:
    """Every backend passes these tests. Subclasses override the ``database`` fixture."""

    @pytest.fixture
    async def database(self) -> AsyncIterator[Database]:
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    def upcasters(self) -> Upcasters:
        upcasters = Upcasters()
        upcasters.add("Tagged", 1, upcast_tagged_v1)
        return upcasters

    @pytest.fixture
    async def store(self, database: Database, upcasters: Upcasters) -> SqlEventStore:
        store = open_event_store(database, upcasters)
        await store.setup()
        await store.setup()  # idempotent
        return store

    async def _append(self, store: EventStore, stream: str, expected: int, *types: str) -> list[StoredEvent]:
        async with store.database.transaction() as tx:
            return await store.append(tx, stream, expected, [NewEvent(t, {"t": t}) for t in types])

    # -- append and read -------------------------------------------------------------------------

    async def test_appended_events_are_read_back_as_stored(self, store: EventStore) -> None:
        stream = new_id()
        events = [
            NewEvent("Opened", {"owner": "ann", "nested": {"a": [1, 2.5, None]}}, correlation_id="c1"),
            NewEvent("Added", {"amount": 3}, causation_id="cause-1", correlation_id="c1"),
        ]
        async with store.database.transaction() as tx:
            appended = await store.append(tx, stream, 0, events)
        read = await store.read_stream(stream)
        assert read == appended
        assert [e.version for e in read] == [1, 2]
        assert read[0].position < read[1].position
        assert [e.event_id for e in read] == [e.event_id for e in events]
        assert read[0].payload == {"owner": "ann", "nested": {"a": [1, 2.5, None]}}
        assert (read[1].correlation_id, read[1].causation_id) == ("c1", "cause-1")
        assert read[0].recorded_at.utcoffset() == timedelta(0)
        assert await store.stream_version(stream) == 2
        assert await store.stream_version(new_id()) == 0

    async def test_a_one_event_append_is_read_back_as_stored(self, store: EventStore) -> None:
        stream = new_id()
        await self._append(store, stream, 0, "Opened")
        event = NewEvent("Added", {"amount": 3}, schema_version=2, correlation_id="c1", causation_id="k1")
        async with store.database.transaction() as tx:
            (appended,) = await store.append(tx, stream, 1, [event])
        assert (await store.history(stream))[1] == appended
        assert (appended.version, appended.schema_version, appended.event_id) == (2, 2, event.event_id)
        assert (appended.correlation_id, appended.causation_id) == ("c1", "k1")
        assert appended.position == (await store.read_stream(stream))[0].position + 1

    async def test_a_large_append_is_one_gap_free_run_and_a_stale_one_writes_nothing(
        self, store: EventStore
    ) -> None:
        # More events than one INSERT carries on SQLite (1,000): the chunks must line up.
        stream, count = new_id(), 2_345
        await self._append(store, new_id(), 0, "Before")
        appended = await self._append(store, stream, 0, *[f"E{n}" for n in range(count)])
        assert [e.version for e in appended] == list(range(1, count + 1))
        first = appended[0].position
        assert [e.position for e in appended] == list(range(first, first + count))
        assert await store.read_stream(stream) == appended
        with pytest.raises(ConcurrencyConflict):
            await self._append(store, stream, count - 1, *["Late"] * count)
        after = await self._append(store, new_id(), 0, "After")
        assert after[0].position == first + count  # nothing of the stale append was kept
        assert await store.stream_version(stream) == count

    async def test_read_stream_window(self, store: EventStore) -> None:
        stream = new_id()
        await self._append(store, stream, 0, "A", "B", "C", "D")
        window = await store.read_stream(stream, after_version=1, to_version=3)
        assert [e.event_type for e in window] == ["B", "C"]

    async def test_append_at_a_wrong_version_conflicts_and_writes_nothing(self, store: EventStore) -> None:
        stream = new_id()
        await self._append(store, stream, 0, "A", "B")
        for stale_or_ahead in (0, 1, 3, 7):
            for events in (["X"], ["X", "Y"]):  # backends may append one event another way
                with pytest.raises(ConcurrencyConflict):
                    await self._append(store, stream, stale_or_ahead, *events)
        assert [e.event_type for e in await store.read_stream(stream)] == ["A", "B"]
        assert len(await store.read_all()) == 2

    async def test_two_concurrent_appends_at_the_same_version_exactly_one_wins(
        self, store: EventStore
    ) -> None:
        stream = new_id()
        await self._append(store, stream, 0, "Opened")
        both_started = asyncio.Barrier(2)

        async def contender(name: str) -> str:
            await both_started.wait()
            async with store.database.transaction() as tx:
                await store.append(tx, stream, 1, [NewEvent("Added", {"by": name})])
                await asyncio.sleep(0.05)  # hold the transaction open while the other one tries
            return name

        outcomes = await asyncio.gather(contender("a"), contender("b"), return_exceptions=True)
        winners = [o for o in outcomes if isinstance(o, str)]
        losers = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        events = await store.read_stream(stream)
        assert [e.payload.get("by") for e in events] == [None, winners[0]]

    async def test_repository_save_of_a_stale_aggregate_conflicts(self, store: EventStore) -> None:
        repository = Repository(store, Tally)
        async with store.database.transaction() as tx:
            await repository.save(tx, Tally.open("t1-" + new_id(), "ann"))
        tally_id = (await store.read_all())[-1].stream_id.removeprefix("Tally-")
        first, second = await repository.load(tally_id), await repository.load(tally_id)
        first.add(1)
        second.add(2)
        async with store.database.transaction() as tx:
            await repository.save(tx, first)
        with pytest.raises(ConcurrencyConflict):
            async with store.database.transaction() as tx:
                await repository.save(tx, second)
        assert (await repository.load(tally_id)).total == 1

    async def test_events_are_immutable_in_the_database(self, store: EventStore) -> None:
        stream = new_id()
        await self._append(store, stream, 0, "A")
        for statement in ("UPDATE strowger_events SET event_type = 'B'", "DELETE FROM strowger_events"):
            with pytest.raises(Exception, match="append-only"):  # each backend raises its own class
                async with store.database.transaction() as tx:
                    await tx.execute(statement)
        assert [e.event_type for e in await store.history(stream)] == ["A"]

    async def test_loading_an_unknown_aggregate_raises_not_found(self, store: EventStore) -> None:
        with pytest.raises(NotFound):
            await Repository(store, Tally).load(new_id())

    # -- one transaction with the caller's other writes (the outbox) ------------------------------

    async def test_events_and_an_outbox_row_commit_or_roll_back_together(self, store: EventStore) -> None:
        database = store.database
        await database.create_tables(outbox_table())
        repository = Repository(store, Tally)
        tally = Tally.open(new_id(), "ann")

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            async with database.transaction() as tx:
                await repository.save(tx, tally)
                await tx.execute("INSERT INTO contract_outbox (body) VALUES (?)", ("opened",))
                raise Boom
        assert await database.fetchall("SELECT body FROM contract_outbox") == []
        assert await store.read_stream(Tally.stream_of(tally.id)) == []

        tally = Tally.open(tally.id, "ann")
        async with database.transaction() as tx:
            await repository.save(tx, tally)
            await tx.execute("INSERT INTO contract_outbox (body) VALUES (?)", ("opened",))
        assert await database.fetchall("SELECT body FROM contract_outbox") == [("opened",)]
        assert (await repository.load(tally.id)).owner == "ann"

    # -- snapshots -------------------------------------------------------------------------------

    @settings(
        max_examples=20,
        deadline=None,
        # Each example uses a fresh stream, so sharing the store fixture is safe; each backend's
        # subclass runs this same method, which is what "differing executors" would flag.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        commands=st.lists(COMMANDS, min_size=0, max_size=25),
        batch_sizes=st.lists(st.integers(1, 4), min_size=1, max_size=25),
        every=st.integers(1, 5),
    )
    async def test_state_from_snapshots_equals_state_from_full_replay(
        self, store: EventStore, commands: list[tuple[str, Any]], batch_sizes: list[int], every: int
    ) -> None:
        with_snapshots = Repository(store, Tally, snapshot_every=every)
        replay_only = Repository(store, Tally, snapshot_every=None)
        tally = Tally.open(new_id(), "ann")
        expected_states = [tally.state()]
        sizes = iter(batch_sizes * len(commands))
        remaining = list(commands)
        while True:
            async with store.database.transaction() as tx:
                await with_snapshots.save(tx, tally)
            if not remaining:
                break
            tally = await with_snapshots.load(tally.id)
            for command in remaining[: next(sizes)]:
                run_command(tally, command)
                expected_states.append(tally.state())
            del remaining[: len(tally.pending)]

        assert (await with_snapshots.load(tally.id)).state() == expected_states[-1]
        assert (await replay_only.load(tally.id)).state() == expected_states[-1]
        for version, expected in enumerate(expected_states, start=1):
            assert (await with_snapshots.load(tally.id, as_of_version=version)).state() == expected

    async def test_snapshots_are_taken_every_n_events_and_used_on_load(self, store: EventStore) -> None:
        repository = Repository(store, Tally, snapshot_every=3)
        tally = Tally.open(new_id(), "ann")
        for amount in range(7):  # versions 2..8, saved one event at a time
            async with store.database.transaction() as tx:
                await repository.save(tx, tally)
            tally.add(amount)
        async with store.database.transaction() as tx:
            await repository.save(tx, tally)
        stream = Tally.stream_of(tally.id)
        snapshot = await store.latest_snapshot(stream, Tally.snapshot_schema)
        assert snapshot is not None and snapshot.version == 6
        assert snapshot.state["total"] == sum(range(5))

        # Proof that loads start from the snapshot: doctor it (tests only!) and see the doctored value.
        async with store.database.transaction() as tx:
            doctored = {**snapshot.state, "owner": "from-snapshot"}
            await tx.execute("DELETE FROM strowger_snapshots WHERE version = ?", (6,))
            await store.save_snapshot(tx, type(snapshot)(**{**vars(snapshot), "state": doctored}))
        loaded = await repository.load(tally.id)
        assert (loaded.owner, loaded.total, loaded.version) == ("from-snapshot", sum(range(7)), 8)
        assert (await Repository(store, Tally, snapshot_every=None).load(tally.id)).owner == "ann"

    async def test_a_snapshot_of_another_state_schema_is_ignored(self, store: EventStore) -> None:
        tally = Tally.open(new_id(), "ann")
        tally.add(5)
        async with store.database.transaction() as tx:
            await Repository(store, Tally, snapshot_every=1).save(tx, tally)

        class TallyV2(Tally):
            stream_type = "Tally"
            snapshot_schema = 2

        loaded = await Repository(store, TallyV2, snapshot_every=1).load(tally.id)
        assert (loaded.total, loaded.version) == (5, 2)
        assert await store.latest_snapshot(Tally.stream_of(tally.id), 2) is None

    # -- point in time ---------------------------------------------------------------------------

    async def test_load_as_of_version_ignores_newer_snapshots(self, store: EventStore) -> None:
        repository = Repository(store, Tally, snapshot_every=2)
        tally = Tally.open(new_id(), "ann")
        for amount in (10, 20, 30, 40):
            tally.add(amount)
        tally.close("done")
        async with store.database.transaction() as tx:
            await repository.save(tx, tally)
        assert await store.latest_snapshot(Tally.stream_of(tally.id), Tally.snapshot_schema) is not None
        as_of = await repository.load(tally.id, as_of_version=3)
        assert (as_of.version, as_of.total, as_of.status) == (3, 30, "open")
        with pytest.raises(NotFound):
            await repository.load(tally.id, as_of_version=0)

    async def test_load_as_of_time(self, store: EventStore) -> None:
        repository = Repository(store, Tally, snapshot_every=1)
        tally = Tally.open(new_id(), "ann")
        saved_at = []
        for amount in (1, 2, 3):
            async with store.database.transaction() as tx:
                saved_at.append((await repository.save(tx, tally))[-1].recorded_at)
            await asyncio.sleep(0.002)  # distinct clock readings
            tally.add(amount)
        async with store.database.transaction() as tx:
            await repository.save(tx, tally)

        with pytest.raises(NotFound):
            await repository.load(tally.id, as_of_time=saved_at[0] - timedelta(microseconds=1))
        assert (await repository.load(tally.id, as_of_time=saved_at[0])).total == 0
        assert (await repository.load(tally.id, as_of_time=saved_at[2])).total == 3
        between = saved_at[1] + (saved_at[2] - saved_at[1]) / 2
        assert (await repository.load(tally.id, as_of_time=between)).version == 2
        both = await repository.load(tally.id, as_of_time=saved_at[2], as_of_version=2)
        assert both.version == 2
        with pytest.raises(ValueError, match="timezone"):
            await repository.load(tally.id, as_of_time=saved_at[0].replace(tzinfo=None))

    # -- upcasting and history -------------------------------------------------------------------

    async def test_old_versions_are_upcast_on_read_and_never_rewritten(self, store: EventStore) -> None:
        tally_id = new_id()
        stream = Tally.stream_of(tally_id)
        async with store.database.transaction() as tx:
            await store.append(
                tx,
                stream,
                0,
                [
                    NewEvent("Opened", {"owner": "ann"}),
                    NewEvent("Tagged", {"label": "gold"}, schema_version=1),
                    NewEvent("Tagged", {"tag": "vip"}, schema_version=2),
                ],
            )
        read = await store.read_stream(stream)
        assert [(e.schema_version, e.payload) for e in read[1:]] == [
            (2, {"tag": "gold"}),
            (2, {"tag": "vip"}),
        ]
        assert (await Repository(store, Tally).load(tally_id)).tags == ["gold", "vip"]
        assert (await store.read_all())[1].payload == {"tag": "gold"}

        recorded = await store.history(stream)
        assert [(e.schema_version, e.payload) for e in recorded[1:]] == [
            (1, {"label": "gold"}),
            (2, {"tag": "vip"}),
        ]
        rows = await store.database.fetchall(
            "SELECT schema_version FROM strowger_events WHERE stream_id = ? ORDER BY version", (stream,)
        )
        assert [row[0] for row in rows] == [1, 1, 2]

    async def test_history_lists_every_event_with_time_and_causality(self, store: EventStore) -> None:
        repository = Repository(store, Tally)
        tally = Tally.open(new_id(), "ann")
        async with store.database.transaction() as tx:
            await repository.save(tx, tally, correlation_id="order-7", causation_id="cmd-1")
        tally.add(4)
        tally.tag("x")
        async with store.database.transaction() as tx:
            await repository.save(tx, tally, correlation_id="order-7", causation_id="cmd-2")
        history = await store.history(Tally.stream_of(tally.id))
        assert [(e.version, e.event_type, e.causation_id) for e in history] == [
            (1, "Opened", "cmd-1"),
            (2, "Added", "cmd-2"),
            (3, "Tagged", "cmd-2"),
        ]
        assert {e.correlation_id for e in history} == {"order-7"}
        assert history[0].recorded_at <= history[1].recorded_at == history[2].recorded_at
        assert len({e.event_id for e in history}) == 3

    # -- global order for subscribers ------------------------------------------------------------

    async def test_read_all_pages_through_every_stream_in_global_order(self, store: EventStore) -> None:
        streams = [new_id() for _ in range(3)]
        appended: list[StoredEvent] = []
        for round_ in range(4):
            for index, stream in enumerate(streams):
                appended += await self._append(store, stream, round_, f"E{index}")
        seen: list[StoredEvent] = []
        while page := await store.read_all(seen[-1].position if seen else 0, limit=5):
            assert len(page) <= 5
            seen += page
        assert [e.event_id for e in seen] == [e.event_id for e in appended]
        positions = [e.position for e in seen]
        assert positions == sorted(set(positions))

    async def test_read_all_never_skips_an_event_committed_out_of_order(self, store: EventStore) -> None:
        """Transaction A appends first but commits last; a poller must still get A's event."""
        a_appended = asyncio.Event()
        b_done = asyncio.Event()
        seen: list[StoredEvent] = []
        stop = asyncio.Event()

        async def writer_a() -> None:
            async with store.database.transaction() as tx:
                await store.append(tx, "stream-a-" + new_id(), 0, [NewEvent("A", {})])
                a_appended.set()
                # Give B every chance to commit first (it cannot, or its event must sort after A's).
                await asyncio.wait({asyncio.ensure_future(b_done.wait())}, timeout=0.3)

        async def writer_b() -> None:
            await a_appended.wait()
            try:
                await self._append(store, "stream-b-" + new_id(), 0, "B")
            finally:
                b_done.set()

        async def poller() -> None:
            while not stop.is_set():
                seen.extend(await store.read_all(seen[-1].position if seen else 0))
                await asyncio.sleep(0.005)

        polling = asyncio.create_task(poller())
        await asyncio.gather(writer_a(), writer_b())
        await asyncio.sleep(0.05)
        stop.set()
        await polling
        seen.extend(await store.read_all(seen[-1].position if seen else 0))
        assert [e.event_type for e in seen] == ["A", "B"]

    async def test_concurrent_writers_and_a_poller_lose_nothing(self, store: EventStore) -> None:
        writers, appends_each = 4, 6
        stop = asyncio.Event()
        seen: list[StoredEvent] = []

        async def writer(number: int) -> None:
            stream = f"w{number}-{new_id()}"
            for version in range(appends_each):
                async with store.database.transaction() as tx:
                    await store.append(tx, stream, version, [NewEvent("W", {"n": number})])
                    await asyncio.sleep(0.001 * (number % 3))  # commit at varying moments

        async def poller() -> None:
            while not stop.is_set():
                seen.extend(await store.read_all(seen[-1].position if seen else 0, limit=7))
                await asyncio.sleep(0)

        polling = asyncio.create_task(poller())
        await asyncio.gather(*(writer(n) for n in range(writers)))
        stop.set()
        await polling
        seen.extend(await store.read_all(seen[-1].position if seen else 0, limit=1000))
        everything = await store.read_all(0, limit=1000)
        assert len(everything) == writers * appends_each
        assert [e.event_id for e in seen] == [e.event_id for e in everything]


def outbox_table() -> Any:
    from strowger.store.db import TableSet

    ddl = "CREATE TABLE IF NOT EXISTS contract_outbox (body TEXT NOT NULL)"
    return TableSet("contract_outbox", sqlite=[ddl], postgresql=[ddl])
