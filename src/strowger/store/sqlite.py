"""SQLite adapter of the database port.

SQLite has one writer at a time, so write transactions are serialised by an
asyncio lock on one connection (``BEGIN IMMEDIATE``) and run on the event loop
thread: in WAL mode with ``synchronous=NORMAL`` a commit only appends to the WAL,
far less than a hop to a worker thread. Reads use a second connection so they
never wait for a writer. Because there is a single writer, rows commit in id
order: the outbox and the embedded log never see a gap that fills later.

Checkpoints (copying the WAL back into the database file, with an fsync) are the
one slow part of a write: SQLite runs them inside the commit that crosses
1,000 WAL pages, which blocked the event loop for milliseconds every few hundred
requests. The writer's automatic checkpoints are off; a thread of the database's
own runs passive checkpoints (they never block the writer or readers) instead.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from strowger.errors import ServiceUnavailable
from strowger.settings import sqlite_path
from strowger.store.db import Database, Params, Row, Transaction

log = logging.getLogger(__name__)

# How often the checkpoint thread copies the WAL into the database file: at 1,000 writes/s of a
# few pages each, the WAL stays within a few MB.
CHECKPOINT_INTERVAL_S = 0.5


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
        self._lock = asyncio.Lock()

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

    async def close(self) -> None:
        async with self._lock:
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.stop)
            for connection in (self._writer, self._reader):
                if connection is not None:
                    connection.close()  # the last one to close checkpoints what is left
            self._writer = self._reader = self._checkpointer = None

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
        async with self._lock:
            connection = self._writer
            connection.execute("BEGIN IMMEDIATE")
            tx = SqliteTransaction(connection)
            try:
                yield tx
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        for callback in tx.after_commit:
            callback()

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
