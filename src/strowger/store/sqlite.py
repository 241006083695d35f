"""SQLite adapter of the database port.

SQLite has one writer at a time: write transactions run one after the other on one
connection (``BEGIN IMMEDIATE``), their statements on the event loop thread (a statement
that only touches the page cache costs far less than a hop to a worker thread). Reads use
a second connection so they never wait for a writer. Because there is a single writer,
rows commit in id order: the outbox and the embedded log never see a gap that fills later.

**Group commit.** A COMMIT writes every page the transaction dirtied to the WAL (a dozen
4 KB pages for one order: each table's and index's leaf), about a fifth of an order's
CPU when done on the loop. So transactions that queue for the writer commit together:
the first one of a group begins the transaction and queues the group's COMMIT behind
whoever is already waiting; each member runs inside a savepoint of its own (a failure
undoes only that member's statements), and the COMMIT runs on a thread of the database's
own, where SQLite releases the GIL, while the loop serves others. A member's
``transaction()`` exits only once its group has committed and its ``on_commit`` callbacks
have run, so the port's promise is unchanged: a transaction that returned is durable; one
that raised left nothing. Idle, a group is one transaction and costs one thread hop; under
load, the requests that arrive while a COMMIT is written form the next group. Two things
follow. A writer sees what earlier members of its group wrote before readers do (it is one
transaction): code that retries a compare-and-set after a conflict must read again as a
writer, not from a snapshot. And a COMMIT that fails (SQLite checks deferred constraints
there; Strowger's tables have none) fails every member of its group: nothing is kept and
each member raises, so no caller is ever told "done" for a write that was lost.

Checkpoints (copying the WAL back into the database file, with an fsync) are the
one slow part of a write: SQLite runs them inside the commit that crosses
1,000 WAL pages, which blocked the event loop for milliseconds every few hundred
requests. The writer's automatic checkpoints are off; a thread of the database's
own runs passive checkpoints (they never block the writer or readers) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import CancelledError as CancelledFutureError
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from strowger.errors import ServiceUnavailable
from strowger.settings import sqlite_path
from strowger.store.db import Database, Params, Row, Transaction, count_writer_wait

log = logging.getLogger(__name__)

# How often the checkpoint thread copies the WAL into the database file: at 1,000 writes/s of a
# few pages each, the WAL stays within a few MB.
CHECKPOINT_INTERVAL_S = 0.5


_MEMBER = "strowger_group_member"  # the savepoint around each member of a group


@dataclass(eq=False)
class _Group:
    """Transactions committed by one COMMIT."""

    committed: asyncio.Future[None]  # done once committed and every callback ran (or failed)
    callbacks: list[tuple[contextvars.Context, Callable[[], None]]] = field(default_factory=list)
    failure: BaseException | None = None  # SQLite rolled the group back when a member failed
    commit_task: asyncio.Task[None] | None = None


def _group_failed(cause: BaseException) -> ServiceUnavailable:
    error = ServiceUnavailable(f"the SQLite transaction was rolled back: {cause!r}")
    error.__cause__ = cause
    return error


def _outcome(pending: Future[sqlite3.Cursor]) -> BaseException | None:
    """The COMMIT's error, or None (waits for the thread if it is still running)."""
    try:
        return pending.exception()
    except CancelledFutureError as exc:  # never started: nothing was committed
        return exc


def _settle(group: _Group, connection: sqlite3.Connection, error: BaseException | None) -> None:
    """Release ``group``'s members: committed (after running their callbacks), or failed."""
    if error is not None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        group.committed.set_exception(error if isinstance(error, Exception) else _group_failed(error))
        return
    for context, callback in group.callbacks:
        try:
            context.run(callback)
        except Exception:  # one member's callback must not keep the others' from running
            log.exception("an on-commit callback failed")
    group.committed.set_result(None)


class SqliteTransaction(Transaction):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.after_commit: list[Callable[[], None]] = []

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self._connection.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._connection.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self._connection.execute(sql, params).fetchall()

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._connection.execute(sql, params).fetchone()
        return row

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(
        self, url: str, *, busy_timeout_ms: int = 10_000, checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    ) -> None:
        self.url = url
        self.path: Path = sqlite_path(url)
        self._busy_timeout_ms = busy_timeout_ms
        self._checkpoint_interval_s = checkpoint_interval_s
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._committer: ThreadPoolExecutor | None = None  # the COMMITs' own thread
        self._lock = asyncio.Lock()  # the writer connection: one member's statements, or one COMMIT
        self._group: _Group | None = None  # begun, its COMMIT not started yet

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    async def open(self) -> None:
        if self._writer is None:
            self._writer = self._connect()
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
            self._reader = self._connect()
            self._checkpointer = Checkpointer(self._connect(), self._checkpoint_interval_s)
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")

    async def close(self) -> None:
        async with self._lock:
            if self._group is not None:  # its COMMIT is queued behind this close: do it now
                await self._commit(self._group)
            if self._committer is not None:
                self._committer.shutdown()
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.stop)
            for connection in (self._writer, self._reader):
                if connection is not None:
                    connection.close()  # the last one to close checkpoints what is left
            self._writer = self._reader = self._checkpointer = self._committer = None

    async def checkpoint(self) -> tuple[int, int]:
        """Checkpoint now (passively): the WAL's frames and how many of them are in the database file."""
        if self._checkpointer is None:
            await self.open()
        assert self._checkpointer is not None
        return await asyncio.to_thread(self._checkpointer.checkpoint)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self._writer is None:
            await self.open()
        assert self._writer is not None
        waiting = time.perf_counter()
        async with self._lock:
            count_writer_wait(time.perf_counter() - waiting)
            connection = self._writer
            group = self._group or self._begin_group(connection)
            tx = SqliteTransaction(connection)
            connection.execute(f"SAVEPOINT {_MEMBER}")
            try:
                yield tx
            except BaseException as exc:
                self._undo_member(connection, group, exc)
                raise
            connection.execute(f"RELEASE {_MEMBER}")
            context = contextvars.copy_context()  # the member's correlation id and span, for its callbacks
            group.callbacks.extend((context, callback) for callback in tx.after_commit)
        waiting = time.perf_counter()
        try:  # shielded: a member cancelled now is committed all the same (its writes are in the group)
            await asyncio.shield(group.committed)
        finally:
            count_writer_wait(time.perf_counter() - waiting)

    def _begin_group(self, connection: sqlite3.Connection) -> _Group:
        """Begin the transaction of a new group and queue its COMMIT behind every waiting writer."""
        connection.execute("BEGIN IMMEDIATE")
        group = self._group = _Group(asyncio.get_running_loop().create_future())
        # A context of its own: the callbacks run in their members' contexts, not the first one's.
        group.commit_task = asyncio.create_task(
            self._commit_when_its_turn_comes(group), context=contextvars.Context()
        )
        return group

    def _undo_member(self, connection: sqlite3.Connection, group: _Group, error: BaseException) -> None:
        """Undo a failed member's statements only; if SQLite already rolled the whole
        transaction back (a full disk, an I/O error), the group's other members fail too."""
        if connection.in_transaction:
            try:
                connection.execute(f"ROLLBACK TO {_MEMBER}")
                connection.execute(f"RELEASE {_MEMBER}")
                return
            except sqlite3.Error:
                log.exception("could not undo a failed transaction's savepoint; rolling its group back")
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
        group.failure = error
        self._group = None  # the next writer begins a new group

    async def _commit_when_its_turn_comes(self, group: _Group) -> None:
        async with self._lock:
            await self._commit(group)

    async def _commit(self, group: _Group) -> None:
        """COMMIT ``group`` off the loop, run its members' callbacks, then release its members."""
        if group.committed.done():
            return
        if self._group is group:
            self._group = None
        if group.failure is not None:
            group.committed.set_exception(_group_failed(group.failure))
            return
        assert self._writer is not None and self._committer is not None
        connection = self._writer
        pending = self._committer.submit(connection.execute, "COMMIT")
        try:
            with contextlib.suppress(Exception):  # the outcome is read from the future itself
                await asyncio.wrap_future(pending)
        finally:  # cancelled (at shutdown only), this waits for the thread: it cannot be stopped
            _settle(group, connection, _outcome(pending))

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Transaction]:
        if self._reader is None:
            await self.open()
        assert self._reader is not None
        connection = self._reader
        connection.execute("BEGIN")
        try:
            yield SqliteTransaction(connection)
        finally:
            connection.execute("ROLLBACK")


class Checkpointer:
    """Copies the WAL into the database file every ``interval_s``, from a thread of its own.

    Passive checkpoints: frames a reader still needs stay in the WAL, nobody waits. The thread
    owns ``connection`` and closes it when stopped; a failed checkpoint is logged and tried
    again at the next tick (the WAL only grows meanwhile, nothing is lost).
    """

    def __init__(self, connection: sqlite3.Connection, interval_s: float) -> None:
        self._connection = connection
        self._interval_s = interval_s
        self._guard = threading.Lock()  # checkpoint() from the loop vs the thread's own
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self) -> tuple[int, int]:
        with self._guard:
            row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        _busy, frames, copied = row
        return int(frames), int(copied)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._connection.close()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.checkpoint()
            except sqlite3.Error:
                log.exception("SQLite checkpoint failed; trying again in %.1fs", self._interval_s)
