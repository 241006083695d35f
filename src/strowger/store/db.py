"""The database port.

Every component keeps its state, its outbox and its inbox in one database so a
state change and the events it emits commit in ONE local transaction. SQL is
written once with ``?`` placeholders (the adapters translate them); DDL that
differs between SQLite and PostgreSQL is given per backend in a :class:`TableSet`.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from strowger.settings import DatabaseKind, database_kind

Row = tuple[Any, ...]


class TextArray(list[str | None]):
    """A ``text[]`` parameter (None elements are NULLs); PostgreSQL gets it in binary, one dump per array."""


class ByteaArray(list[bytes]):
    """A ``bytea[]`` parameter (see :class:`TextArray`)."""


class Int4Array(list[int]):
    """An ``int4[]`` parameter (see :class:`TextArray`)."""


Params = Sequence[Any]
_SAVEPOINT_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class TableSet:
    """The tables one part of Strowger owns, as DDL for each backend (idempotent statements)."""

    name: str
    sqlite: Sequence[str]
    postgresql: Sequence[str]

    def ddl(self, kind: DatabaseKind) -> Sequence[str]:
        return self.sqlite if kind == "sqlite" else self.postgresql


class Transaction(abc.ABC):
    """One open database transaction; it commits when its context exits cleanly."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement for each parameter row (a batch insert)."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query and return every row."""

    @abc.abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query and return its first row, or None."""

    @abc.abstractmethod
    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after this transaction has committed (never if it rolls back)."""

    @asynccontextmanager
    async def savepoint(self, name: str) -> AsyncIterator[None]:
        """A nested scope: an exception raised inside undoes only the statements run inside, then
        propagates; the transaction stays usable (to record the failure, for instance)."""
        if not _SAVEPOINT_NAME.fullmatch(name):  # SQL identifiers cannot be parameters
            raise ValueError(f"not a savepoint name: {name!r}")
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except Exception:
            await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            await self.execute(f"RELEASE SAVEPOINT {name}")
            raise
        await self.execute(f"RELEASE SAVEPOINT {name}")


class Database(abc.ABC):
    """A connection (pool) to one SQLite file or one PostgreSQL database."""

    kind: DatabaseKind
    url: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; safe to call twice."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; safe to call twice."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-write transaction: commits on clean exit, rolls back on an exception."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-only session that never blocks writers (a separate connection).

        On PostgreSQL each statement runs in autocommit and sees what was committed when it
        started; read several statements together only where that is enough (immutable rows,
        such as events, or a single query)."""

    async def create_tables(self, *table_sets: TableSet) -> None:
        """Create the tables of each set if they do not exist yet."""
        async with self.transaction() as tx:
            for table_set in table_sets:
                for statement in table_set.ddl(self.kind):
                    await tx.execute(statement)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """A one-query read outside any write transaction."""
        async with self.snapshot() as tx:
            return await tx.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """A one-row read outside any write transaction."""
        async with self.snapshot() as tx:
            return await tx.fetchone(sql, params)

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_database(url: str, **options: Any) -> Database:
    """The adapter for ``url`` (not yet opened): ``sqlite:///…`` or ``postgresql://…``."""
    if database_kind(url) == "sqlite":
        from strowger.store.sqlite import SqliteDatabase

        return SqliteDatabase(url, **options)
    from strowger.store.postgres import PostgresDatabase

    return PostgresDatabase(url, **options)
