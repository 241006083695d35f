"""The transactional outbox: events are written with the state change, then relayed to the bus.

A component never publishes directly. It writes messages into ``outbox`` inside
the transaction that changes its state (:meth:`Outbox.add`); the
:class:`OutboxRelay` publishes committed rows and marks them published. So an
event exists if and only if the state change committed, and nothing is lost if
the process dies at any point (at worst a row is published twice; consumers'
inboxes absorb the duplicate).

Ordering and concurrency (docs/event-backbone.md has the full argument):

* Each row carries an outbox *partition*, ``partition_for(key, partitions)``, so
  all rows of one entity share one.
* The relay selects ``published_at IS NULL`` rows in id order, never "rows after
  the last id seen", so a row whose transaction commits late (PostgreSQL
  allocates ids before commit) is never skipped.
* On PostgreSQL a relay claims outbox partitions with
  ``pg_try_advisory_xact_lock`` for the duration of one batch; several relays
  (threads, processes, hosts) therefore never publish one entity's rows
  concurrently or out of order, and they spread the partitions between them.
  The batch's rows are marked by the statement that selects them; the mark is
  seen only once the transaction commits, after the bus confirmed.
* On SQLite the relay's transaction is itself the claim: SQLite has one writer,
  and ids are allocated at commit order.
* When the bus is the embedded log in the same database, appending to the log
  and marking the rows published happen in ONE transaction: exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import orjson

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.observe import NULL_OBSERVER, PipelineObserver, is_null
from strowger.bus.pacing import LoopPacer, PacedBatches
from strowger.bus.partitioning import partition_for
from strowger.bus.port import Bus
from strowger.events.envelope import Message
from strowger.store.db import Database, Row, TableSet, Transaction

log = logging.getLogger("strowger.outbox")

OUTBOX_PARTITIONS = 16
ADVISORY_LOCK_CLASS = 0x53545257  # "STRW": the first key of the relay's advisory locks

# On PostgreSQL every relayed row leaves a dead version behind (the mark is an UPDATE), and the
# relay's take reads the unpublished rows by index: so the outbox is vacuumed and analyzed after
# every 10,000 changes, not after 20% / 10% of the table as by default (a burst into a small
# table otherwise left its plans without statistics: docs/benchmarks.md, round 4). Set when the
# table is created; an existing table keeps its settings (ALTER TABLE on a hot table takes a lock).
OUTBOX_TABLES = TableSet(
    name="outbox",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL, key TEXT NOT NULL, headers TEXT NOT NULL, value BLOB NOT NULL,
            partition INTEGER NOT NULL, created_at REAL NOT NULL, published_at REAL)""",
        # SQLite's relay takes in id order, not per partition: with a (partition, id) index the
        # planner scanned the whole table in rowid order, published history included (10% of the
        # API's CPU after 8,000 orders, growing with the outbox). The old index is dropped.
        "CREATE INDEX IF NOT EXISTS outbox_unpublished_by_id ON outbox (id) WHERE published_at IS NULL",
        "DROP INDEX IF EXISTS outbox_unpublished",
        "CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS outbox (
            id BIGSERIAL PRIMARY KEY,
            topic TEXT NOT NULL, key TEXT NOT NULL, headers TEXT NOT NULL, value BYTEA NOT NULL,
            partition INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            published_at DOUBLE PRECISION) WITH (
            autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
            autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 10000)""",
        "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (partition, id) WHERE published_at IS NULL",
        "CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL",
    ],
)


def now() -> float:
    return datetime.now(UTC).timestamp()


class Outbox:
    """Writes messages into the outbox table inside the caller's transaction."""

    def __init__(self, partitions: int = OUTBOX_PARTITIONS) -> None:
        self.partitions = partitions
        self._wakeup = asyncio.Event()
        self._committed: set[int] = set()  # partitions given rows since a relay last took them

    async def add(self, tx: Transaction, messages: Sequence[Message]) -> None:
        """Store ``messages`` for publishing; they exist only if ``tx`` commits (then the relay wakes)."""
        if not messages:
            return
        created = now()
        rows = [
            (
                m.topic,
                m.key,
                orjson.dumps(dict(m.headers)).decode(),
                m.value,
                partition_for(m.key, self.partitions),
                created,
            )
            for m in messages
        ]
        await tx.executemany(
            "INSERT INTO outbox (topic, key, headers, value, partition, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        partitions = {row[4] for row in rows}
        tx.on_commit(lambda: self.wake(partitions))

    def wake(self, partitions: Iterable[int] = ()) -> None:
        """Tell the relays in this process that rows are waiting (in ``partitions``, if known)."""
        self._committed.update(partitions)
        self._wakeup.set()

    def take_committed(self) -> set[int]:
        """The partitions given rows in this process since the last call (a hint, not the truth:
        other processes write too, so a relay still polls every partition now and then)."""
        committed, self._committed = self._committed, set()
        return committed

    async def wait(self, timeout: float) -> bool:
        """Sleep until :meth:`wake` is called (True) or ``timeout`` seconds pass (False)."""
        woken = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel (3.11)
                woken = await self._wakeup.wait()
        self._wakeup.clear()
        return woken


class OutboxRelay:
    """Publishes committed outbox rows to the bus, in id order per entity, then marks them published.

    Wakes when :class:`Outbox` signals a commit in this process and polls every
    ``poll_interval`` seconds as a fallback (rows written by other processes).
    Published rows older than ``retention`` are purged every ``purge_interval``, and so are
    the embedded bus's log rows (:meth:`EmbeddedBus.purge`) when that is the bus.
    On PostgreSQL, up to ``concurrency`` groups of partitions are relayed at once (one pooled
    connection each).
    ``observer`` is told of each batch once it is published and marked (after commit).
    With a ``pacer`` (SQLite, where its work runs on the loop HTTP requests are served on) the
    relay is background work like the consumers it feeds: while requests keep the API busy
    its batches are sized to the pacer's budget and count against their share of the loop
    (``bus/pacing.py``); the rows wait in the outbox, committed, and nothing else changes.
    """

    def __init__(
        self,
        database: Database,
        bus: Bus,
        outbox: Outbox,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        retention: timedelta | None = timedelta(days=7),
        purge_interval: float = 600.0,
        error_pause: float = 1.0,
        concurrency: int = 4,
        observer: PipelineObserver = NULL_OBSERVER,
        purge_inbox: bool = True,  # False where the inbox is not this database's (a split cluster)
        pacer: LoopPacer | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.database = database
        self.bus = bus
        self.outbox = outbox
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self.purge_interval = purge_interval
        self.error_pause = error_pause
        self.concurrency = concurrency
        self.observer = observer
        self.purge_inbox = purge_inbox
        self.pacer = pacer if database.kind == "sqlite" else None  # elsewhere I/O suspends the relay
        self._paced = PacedBatches(self.pacer) if self.pacer is not None else None
        self._observing = not is_null(observer)
        self._same_database = isinstance(bus, EmbeddedBus) and bus.database is database

    async def run(self) -> None:
        """Relay until cancelled."""
        await self.database.create_tables(OUTBOX_TABLES)
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        woken = False  # by a commit in this process (its partitions are known), not the poll
        while True:
            try:
                hinted = (self.outbox.take_committed() or None) if woken else None  # empty: ask
                while await self._relay_full_round(hinted):
                    hinted = None  # a full batch: more are probably waiting, anywhere
                if self.retention is not None and loop.time() >= next_purge:
                    await purge(self.database, older_than=self.retention, inbox=self.purge_inbox)
                    if isinstance(self.bus, EmbeddedBus):  # the log's replay window is the same
                        await self.bus.purge(older_than=self.retention)
                    next_purge = loop.time() + self.purge_interval
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", self.error_pause)
                await asyncio.sleep(self.error_pause)
                woken = False  # the next round looks at every partition
                continue
            woken = await self.outbox.wait(self.poll_interval)

    async def _relay_full_round(self, hinted: set[int] | None) -> bool:
        """One round, through the pacer if there is one; whether a batch was full (more waiting)."""
        if self._paced is None:
            return self.batch_size in await self._relay_round(hinted)
        count, limit = await self._paced.run(self.batch_size, self._relay_sqlite_batch)
        return count >= limit

    async def relay_once(self) -> int:
        """Publish what is waiting (one batch per group of claimable partitions); returns how many rows."""
        return sum(await self._relay_round())

    async def _relay_round(self, hinted: set[int] | None = None) -> list[int]:
        """One batch per group of partitions with rows waiting; how many rows each batch published.

        On PostgreSQL a batch is one transaction over a group of partitions, holding their
        advisory locks: a partition's rows stay in order. One transaction per group, not per
        partition: at 1,000 commits/s a round finds a row or two in each of many partitions.
        ``hinted``: the partitions this process's commits just filled, relayed in ONE group
        without first asking which partitions have rows (a round trip less between commit and
        publish, and the fewest transactions for a trickle); a full batch makes the next round
        ask. Asked rounds (a backlog) spread the partitions over ``concurrency`` groups relayed
        at once, so the bus's confirmation waits (or one batch's log append and the next one's
        take) overlap.
        """
        if self.database.kind == "sqlite":
            return [await self._relay_sqlite_batch()]  # one writer: nothing to overlap
        if hinted is not None:
            groups = [sorted(hinted)]
        else:
            found = await self.database.fetchall(
                "SELECT DISTINCT partition FROM outbox WHERE published_at IS NULL"
            )
            partitions = sorted(int(p) for (p,) in found)
            groups = _spread(partitions, self.concurrency)
        outcomes = await asyncio.gather(
            *(self._relay_batch(group) for group in groups), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the others have finished (committed or rolled back) by now
        return [outcome for outcome in outcomes if isinstance(outcome, int)]

    async def _relay_batch(self, partitions: list[int]) -> int:
        """PostgreSQL: claim what it can of ``partitions``, take and mark a batch, publish, commit.

        Claiming, selecting and marking are one statement (:data:`_TAKE_BATCH`): one round trip
        before the publish. Nobody sees the mark before the transaction commits, which is after
        the bus confirmed, and a failed publish rolls it back.
        """
        async with self.database.transaction() as tx:
            rows = await _take_batch(tx, partitions, self.batch_size)
            if not rows:
                return 0  # nothing waiting, or other relays own these partitions right now
            messages = [_message(row) for row in rows]
            await self._hand_over(tx, messages)
        if self._observing:
            self._report(messages)
        return len(rows)

    async def _relay_sqlite_batch(self, limit: int | None = None) -> int:
        """SQLite: the write transaction is the claim; select in id order, publish, mark."""
        async with self.database.transaction() as tx:
            rows = await _unpublished(tx, limit or self.batch_size)
            if not rows:
                return 0
            messages = [_message(row) for row in rows]
            await self._hand_over(tx, messages)
            at = now()
            await tx.executemany(
                "UPDATE outbox SET published_at = ? WHERE id = ?", [(at, row[0]) for row in rows]
            )
        if self._observing:
            self._report(messages)
        return len(rows)

    async def _hand_over(self, tx: Transaction, messages: list[Message]) -> None:
        """Append to the embedded log in ``tx`` (exactly once), or publish and wait for the broker."""
        if self._same_database:
            assert isinstance(self.bus, EmbeddedBus)
            await self.bus.append(tx, messages)
        else:
            await self.bus.publish(messages)  # a crash after this and before commit: re-published

    def _report(self, messages: list[Message]) -> None:
        try:
            self.observer.published(messages)
        except Exception:  # an observer must never stop the relay (the batch has committed)
            log.exception("pipeline observer failed")


def _spread(partitions: list[int], groups: int) -> list[list[int]]:
    """``partitions`` dealt round-robin into at most ``groups`` non-empty groups."""
    count = min(groups, len(partitions))
    return [partitions[start::count] for start in range(count)]


# The batch of a group of partitions, in one statement:
# * ``claimed``: the partitions whose advisory lock the transaction now holds, until it ends
#   (try-locks: one another relay holds is skipped this round, never waited for). The key
#   includes the schema: advisory locks are server-wide, and platforms in other schemas of the
#   same server (tenants, test runs, a cluster beside a demo) must never contend for them.
#   A MATERIALIZED CTE is evaluated once: each lock is tried once, and only rows of the
#   partitions it returns are updated.
# * the oldest unpublished rows of those partitions in (partition, id) order (the index's), marked
#   published. Order across partitions does not matter (an entity's rows share one partition);
#   within one it is id order, as the strategy requires.
# * ``published_at IS NULL`` is checked again on the row being updated: the statement's snapshot
#   is taken before the locks, so a row that the lock's previous holder marked and committed in
#   between still looks unpublished in the subquery; the re-check (on the committed version)
#   skips it, so a row is never taken twice and never before the rows published ahead of it.
# * ``id = ANY(ARRAY(…))``: the chosen ids are looked up by primary key. With ``id IN (…)`` the
#   planner joined them by hashing a sequential scan of the whole outbox (EXPLAIN ANALYZE, 1,000
#   rows out of 20,000 waiting: 30 to 53 ms a batch, against 19 to 39 ms now).
_TAKE_BATCH = (
    "WITH claimed AS MATERIALIZED ("
    "SELECT p FROM unnest(?::int[]) AS p "
    "WHERE pg_try_advisory_xact_lock(hashtext(? || current_schema()), p)) "
    "UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND id = ANY(ARRAY("
    "SELECT id FROM outbox WHERE published_at IS NULL AND partition IN (SELECT p FROM claimed) "
    "ORDER BY partition, id LIMIT ?)) "
    "RETURNING id, topic, key, headers, value, partition"
)


async def _take_batch(tx: Transaction, partitions: list[int], limit: int) -> list[Row]:
    """Up to ``limit`` unpublished rows of the claimable ``partitions``, marked published in ``tx``
    (PostgreSQL), in relay order."""
    rows = await tx.fetchall(_TAKE_BATCH, (partitions, f"{ADVISORY_LOCK_CLASS}:", now(), limit))
    rows.sort(key=_relay_order)  # RETURNING follows no order
    return rows


def _relay_order(row: Row) -> tuple[int, int]:
    return (row[5], row[0])  # (partition, id)


# SQLite's take: through outbox_unpublished_by_id, so it costs the same at any published history.
TAKE_SQLITE = (
    "SELECT id, topic, key, headers, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?"
)


async def _unpublished(tx: Transaction, limit: int) -> list[Row]:
    return await tx.fetchall(TAKE_SQLITE, (limit,))


def _message(row: Row) -> Message:
    topic, key, headers, value = row[1:5]
    return Message(topic=topic, key=key, headers=orjson.loads(headers), value=bytes(value))


async def purge(database: Database, *, older_than: timedelta, inbox: bool = True) -> tuple[int, int]:
    """Delete published outbox rows and (``inbox``) inbox rows older than ``older_than``; both counts.

    An inbox row is only needed while its event may still be redelivered, so the
    retention must exceed the longest redelivery or replay window you rely on.
    """
    from strowger.store.inbox import INBOX_TABLES

    await database.create_tables(OUTBOX_TABLES, *([INBOX_TABLES] if inbox else []))
    cutoff = now() - older_than.total_seconds()
    async with database.transaction() as tx:
        outbox = await tx.execute(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?", (cutoff,)
        )
        inboxed = await tx.execute("DELETE FROM inbox WHERE processed_at < ?", (cutoff,)) if inbox else 0
    if outbox or inboxed:
        log.info("purged %d outbox rows and %d inbox rows older than %s", outbox, inboxed, older_than)
    return outbox, inboxed
