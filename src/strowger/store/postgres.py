"""PostgreSQL adapter of the database port (psycopg 3, async, pooled).

SQL is written with ``?`` placeholders for both backends; this adapter turns
them into psycopg's ``%s`` once per statement text and caches the result.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg_pool import AsyncConnectionPool

from strowger.errors import ConcurrencyConflict, ServiceUnavailable
from strowger.settings import redact_url
from strowger.store.db import (
    ByteaArray,
    Database,
    Int4Array,
    Params,
    Row,
    TableSet,
    TextArray,
    Transaction,
)

BEGIN = "BEGIN"


# One-dimensional arrays of one known element type, sent in PostgreSQL's binary array format.
#
# psycopg sends a plain list as an array literal, quoting every element in Python (a regular
# expression per element). Its generic binary list dumper avoids the quoting but still looks up
# a dumper per element, upgrades and caches it: in a 10-event append that was a quarter of the
# client's CPU. The element type is known here, so each array is one struct.pack and a join.
_HEADER = struct.Struct("!iiiii")  # dimensions, has nulls, element oid, length, lower bound
_LENGTH = struct.Struct("!i")
_INT4_ITEM = struct.Struct("!ii")  # length 4, value
_NULL = _LENGTH.pack(-1)


def _binary_array(element_oid: int, items: list[bytes | None]) -> bytes:
    if not items:
        return struct.pack("!iii", 0, 0, element_oid)
    has_null = None in items
    parts = [_HEADER.pack(1, int(has_null), element_oid, len(items), 1)]
    for item in items:
        parts.append(_NULL if item is None else _LENGTH.pack(len(item)) + item)
    return b"".join(parts)


class _TextArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: TextArray) -> bytes:
        return _binary_array(25, [None if item is None else item.encode() for item in obj])


class _ByteaArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = 1001  # bytea[]

    def dump(self, obj: ByteaArray) -> bytes:
        return _binary_array(17, list(obj))


class _Int4ArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = 1007  # int4[]

    def dump(self, obj: Int4Array) -> bytes:
        if not obj:
            return struct.pack("!iii", 0, 0, 23)
        return _HEADER.pack(1, 0, 23, len(obj), 1) + b"".join(_INT4_ITEM.pack(4, item) for item in obj)


# On the global adapters, before any connection copies them.
psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
psycopg.adapters.register_dumper(Int4Array, _Int4ArrayDumper)


@functools.lru_cache(maxsize=4096)
def to_psycopg(sql: str) -> str:
    """``?`` placeholders to ``%s`` (a literal ``%`` is escaped first)."""
    return sql.replace("%", "%%").replace("?", "%s")


# A plain ``INSERT … VALUES (?, …, ?)``, optionally ``ON CONFLICT … DO NOTHING``: nothing returned,
# nothing updated, so N of them in a row do what one multi-row INSERT does.
_PLAIN_INSERT = re.compile(
    r"^(?P<head>\s*INSERT\s+INTO\s.+?\sVALUES\s*)(?P<row>\((?:\s*\?\s*,)*\s*\?\s*\))"
    r"(?P<tail>\s+ON\s+CONFLICT\b[^;]*?\bDO\s+NOTHING)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_MAX_ROWS_PER_INSERT = 256
_MAX_PARAMS = 65_535  # the protocol's limit on one statement's parameters


@functools.lru_cache(maxsize=1024)
def _multi_row(sql: str, rows: int) -> str | None:
    """``sql`` (a plain INSERT of one row) inserting ``rows`` rows at once, or None if it is not one.

    Numbered ``$n`` placeholders, for a raw cursor: psycopg re-parses a ``%s`` statement of over
    50 parameters on every call (it caches only small ones), which cost more than it saved."""
    match = _PLAIN_INSERT.match(sql)  # anchored at both ends: a RETURNING or DO UPDATE never matches
    if match is None:
        return None
    width = match["row"].count("?")
    numbers = iter(range(1, rows * width + 1))
    values = ", ".join("(" + ", ".join(f"${next(numbers)}" for _ in range(width)) + ")" for _ in range(rows))
    return f"{match['head']}{values}{match['tail'] or ''}"


def _chunk_sizes(rows: int, width: int) -> list[int]:
    """``rows`` split into powers of two (largest first), each within the statement limits.

    Powers of two keep the statement texts few (about eight per INSERT), so psycopg's
    prepared-statement cache serves them whatever the batch sizes are.
    """
    largest = min(_MAX_ROWS_PER_INSERT, 1 << ((_MAX_PARAMS // max(width, 1)).bit_length() - 1))
    sizes, left, size = [], rows, largest
    while left:
        while size > left:
            size //= 2
        sizes.append(size)
        left -= size
    return sizes


class PostgresTransaction(Transaction):
    """Statements of one transaction; ``BEGIN`` travels with the first one.

    Left to itself, psycopg sends ``BEGIN`` and waits for its answer before the first
    statement: a round trip of its own (even in pipeline mode it syncs after ``BEGIN``).
    Connections are in autocommit mode instead, and the transaction sends ``BEGIN`` and its
    first statement together in one pipeline, one write and one read; a transaction of one
    statement (an event append) costs two round trips with the ``COMMIT`` instead of three.
    A transaction that runs no statement sends nothing at all.
    """

    def __init__(self, connection: psycopg.AsyncConnection[Any], *, begun: bool = False) -> None:
        self._connection = connection
        self._begun = begun
        self.after_commit: list[Callable[[], None]] = []

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._run(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """A plain INSERT goes as multi-row INSERTs (a few statements instead of one per row:
        psycopg spends ~25 µs of Python per statement of an executemany); anything else as
        psycopg's pipelined executemany. BEGIN, if still due, goes first in the pipeline.

        Multi-row VALUES are inserted in their written order, so serial ids (the outbox's
        order per entity) follow the rows' order as they did one statement at a time."""
        batch = list(rows)
        if not batch:
            return
        width = len(batch[0])
        async with self._connection.cursor() as cursor, self._connection.pipeline():
            if not self._begun:
                await self._connection.execute(BEGIN)
            if len(batch) == 1 or _multi_row(sql, 1) is None:
                await cursor.executemany(to_psycopg(sql), batch)
            else:
                await self._insert_chunks(sql, batch, width)
        self._begun = True

    async def _insert_chunks(self, sql: str, batch: Sequence[Params], width: int) -> None:
        async with psycopg.AsyncRawCursor(self._connection) as raw:
            start = 0
            for size in _chunk_sizes(len(batch), width):
                statement = _multi_row(sql, size)
                assert statement is not None
                params = list(itertools.chain.from_iterable(batch[start : start + size]))
                await raw.execute(statement, params)
                start += size

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = await self._run(sql, params)
        return await cursor.fetchall()

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cursor = await self._run(sql, params)
        return await cursor.fetchone()

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)

    async def _run(self, sql: str, params: Params) -> psycopg.AsyncCursor[Any]:
        if self._begun:
            return await self._connection.execute(to_psycopg(sql), params)
        # Leaving the pipeline sends BEGIN + the statement with one Sync and reads both
        # results (raising the statement's error, if any, here).
        async with self._connection.pipeline():
            await self._connection.execute(BEGIN)
            cursor = await self._connection.execute(to_psycopg(sql), params)
        self._begun = True
        return cursor


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        schema: str | None = None,
        borrowed: Iterable[str] = (),
    ) -> None:
        """``schema``: the search_path, where this process's tables live (created if missing).

        ``borrowed``: names that are views onto another component's tables in a split cluster
        (docs/operations.md, "Database layout"): DDL creating or altering them is skipped here.
        """
        self.url = url.replace("postgres://", "postgresql://", 1)
        self.schema = schema
        self.borrowed = frozenset(borrowed)
        self._pool: AsyncConnectionPool | None = None
        self._read_pool: AsyncConnectionPool | None = None
        self._min_size = min_size
        self._max_size = max_size

    async def _configure(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if self.schema:  # autocommit: each statement commits, the setting lasts the session
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
            # the schema exists, which a cluster component's role does not have.
            cursor = await connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
            if await cursor.fetchone() is None:
                await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await connection.execute(f'SET search_path TO "{self.schema}"')

    async def create_tables(self, *table_sets: TableSet) -> None:
        """As the base class, one process at a time: concurrent DDL on one schema can deadlock
        (processes of a cluster start together and each creates every table). A table or index
        that exists already is not touched: even ``CREATE INDEX IF NOT EXISTS`` takes a lock on
        its table, which deadlocks with the inserts of consumers already running."""
        async with self.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"strowger-ddl:{self.schema}",))
            for table_set in table_sets:
                for statement in table_set.ddl(self.kind):
                    if ddl_target(statement) in self.borrowed:
                        continue  # a view onto another component's table: its owner creates it
                    if not await _exists(tx, statement):
                        await tx.execute(statement)

    async def open(self) -> None:
        if self._pool is not None:
            return
        # Both pools are autocommit: a write transaction sends its own BEGIN with its first
        # statement (PostgresTransaction); a read outside a write is one round trip per query
        # instead of BEGIN + query + ROLLBACK, each statement seeing only committed data.
        self._pool = await self._open_pool(max_size=self._max_size)
        self._read_pool = await self._open_pool(max_size=max(2, self._max_size // 2))

    async def _open_pool(self, *, max_size: int) -> AsyncConnectionPool:
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=max_size,
            open=False,
            configure=self._configure,
            kwargs={"autocommit": True},
        )
        try:
            await pool.open(wait=True, timeout=10)
        except Exception as exc:
            await pool.close()
            where = redact_url(self.url)
            raise ServiceUnavailable(f"cannot connect to PostgreSQL at {where}: {exc}") from exc
        return pool

    async def close(self) -> None:
        for pool in (self._pool, self._read_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._read_pool = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        tx: PostgresTransaction
        try:
            async with _checked_out(self._pool) as connection:
                tx = PostgresTransaction(connection)
                try:
                    yield tx
                except BaseException:
                    await _roll_back(connection)
                    raise
                await connection.commit()  # sends COMMIT only if a statement began the transaction
        except psycopg.errors.SerializationFailure as exc:
            raise ConcurrencyConflict(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"PostgreSQL: {exc}") from exc
        for callback in tx.after_commit:
            callback()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Transaction]:
        if self._read_pool is None:
            await self.open()
        assert self._read_pool is not None
        try:
            async with _checked_out(self._read_pool) as connection:
                yield PostgresTransaction(connection, begun=True)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"PostgreSQL: {exc}") from exc


@asynccontextmanager
async def _checked_out(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection; a cancel that arrived while waiting for it is raised, never lost.

    psycopg_pool waits for a free connection with ``asyncio.wait_for``, which on Python 3.11
    returns the connection and drops the cancel when both arrive in one loop turn (every
    task cancelled at shutdown while others hand their connections back). The cancelled
    task would then go on: a consumer's fetch loop forever. A rise in the task's pending
    cancel count while we waited is that lost cancel; it is raised here, and the connection
    goes straight back to the pool.
    """
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    async with pool.connection() as connection:
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        yield connection


async def _roll_back(connection: psycopg.AsyncConnection[Any]) -> None:
    """Roll back after the caller's error; a connection that broke meanwhile is the pool's to discard.

    The caller's exception is what matters: a failed rollback must not replace it (the pool
    checks every returned connection and drops a broken one).
    """
    with suppress(psycopg.Error):
        await connection.rollback()


_CREATES = re.compile(
    r"^\s*CREATE\s+(?:(?:UNIQUE\s+)?(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS|OR\s+REPLACE\s+VIEW)\s+(\w+)",
    re.IGNORECASE,
)
_TARGETS = (
    re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+ON\s+(\w+)", re.I),
    re.compile(r"^\s*CREATE\s+(?:TABLE|(?:OR\s+REPLACE\s+)?VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I),
    re.compile(r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\w+)", re.I),
    re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+\w+\s.*?\sON\s+(\w+)", re.I | re.S),
)


def ddl_target(statement: str) -> str | None:
    """The table (or view) a DDL statement creates, indexes or alters; None for anything else."""
    for pattern in _TARGETS:
        match = pattern.match(statement)
        if match is not None:
            return match.group(1).lower()
    return None


_ADDS_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)
_RELATION_EXISTS = "SELECT to_regclass(?) IS NOT NULL"
_COLUMN_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute "
    "WHERE attrelid = to_regclass(?) AND attname = ? AND NOT attisdropped)"
)


def existence_check(statement: str) -> tuple[str, tuple[str, ...]] | None:
    """A query (``?`` placeholders, resolved in the search_path) telling whether the table, index,
    view or column ``statement`` creates is there already; None when it cannot tell (run it).

    Skipping such a statement matters on a live database: ``CREATE INDEX IF NOT EXISTS`` and
    ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` lock their table even when there is nothing to do."""
    match = _CREATES.match(statement)
    if match is not None:
        return _RELATION_EXISTS, (match.group(1),)
    match = _ADDS_COLUMN.match(statement)
    if match is not None:
        return _COLUMN_EXISTS, (match.group(1), match.group(2).lower())
    return None


async def _exists(tx: Transaction, statement: str) -> bool:
    """Whether what ``statement`` creates is already there (see :func:`existence_check`)."""
    check = existence_check(statement)
    if check is None:
        return False
    row = await tx.fetchone(*check)
    return bool(row and row[0])
