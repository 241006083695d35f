"""SQLite adapter of the database port.

SQLite has one writer at a time, so write transactions are serialised by an
asyncio lock on one connection (``BEGIN IMMEDIATE``) and run on the event loop
thread: in WAL mode with ``synchronous=NORMAL`` a commit costs microseconds, far
less than a hop to a worker thread. Reads use a second connection so they never
wait for a writer. Because there is a single writer, rows commit in id order:
the outbox and the embedded log never see a gap that fills later.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from strowger.errors import ServiceUnavailable
from strowger.settings import sqlite_path
from strowger.store.db import Database, Params, Row, Transaction


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

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.url = url
        self.path: Path = sqlite_path(url)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
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
            self._reader = self._connect()

    async def close(self) -> None:
        async with self._lock:
            for connection in (self._writer, self._reader):
                if connection is not None:
                    connection.close()
            self._writer = self._reader = None

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
