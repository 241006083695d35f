"""SQLite's group commit: writers queued together share one COMMIT, each in a savepoint of its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from strowger.bus.pacing import loop_stopwatch
from strowger.errors import ServiceUnavailable
from strowger.store.db import Database, TableSet, writer_waits
from strowger.store.sqlite import SqliteDatabase

NOTES = TableSet(
    "notes",
    sqlite=["CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)"],
    postgresql=[],
)
# A deferred foreign key is only checked by COMMIT: the one way to make a COMMIT itself fail.
ORPHANS = TableSet(
    "orphans",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS parents (id INTEGER PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS orphans (id INTEGER PRIMARY KEY, parent INTEGER"
        " REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
    ],
    postgresql=[],
)


def count_commits(database: SqliteDatabase) -> list[str]:
    """The COMMITs the writer connection runs from now on."""
    commits: list[str] = []
    assert database._writer is not None
    database._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    return commits


async def insert(database: Database, body: str) -> None:
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO notes (body) VALUES (?)", (body,))


async def bodies(database: Database) -> list[str]:
    return [row[0] for row in await database.fetchall("SELECT body FROM notes ORDER BY id")]


async def test_writers_that_queue_together_share_one_commit(sqlite_db: SqliteDatabase) -> None:
    await sqlite_db.create_tables(NOTES)
    commits = count_commits(sqlite_db)
    await asyncio.gather(*(insert(sqlite_db, f"note {n}") for n in range(20)))
    assert len(commits) == 1
    assert await bodies(sqlite_db) == [f"note {n}" for n in range(20)]  # in the order they were written


async def test_a_writer_alone_commits_at_once(sqlite_db: SqliteDatabase) -> None:
    await sqlite_db.create_tables(NOTES)
    commits = count_commits(sqlite_db)
    for n in range(3):
        await insert(sqlite_db, f"note {n}")
        assert len(commits) == n + 1 and await bodies(sqlite_db) == [f"note {m}" for m in range(n + 1)]


async def test_a_failed_commit_fails_every_writer_of_its_group_and_keeps_nothing(
    sqlite_db: SqliteDatabase,
) -> None:
    await sqlite_db.create_tables(NOTES, ORPHANS)

    async def orphan() -> None:
        async with sqlite_db.transaction() as tx:
            await tx.execute("INSERT INTO orphans (parent) VALUES (42)")

    outcomes = await asyncio.gather(insert(sqlite_db, "innocent"), orphan(), return_exceptions=True)
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert await bodies(sqlite_db) == []
    await insert(sqlite_db, "after")  # the writer is usable again
    assert await bodies(sqlite_db) == ["after"]


async def test_a_writer_cancelled_while_its_group_commits_is_committed_all_the_same(
    sqlite_db: SqliteDatabase,
) -> None:
    await sqlite_db.create_tables(NOTES)
    called: list[str] = []

    async def write() -> None:
        async with sqlite_db.transaction() as tx:
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("cancelled",))
            tx.on_commit(lambda: called.append("cancelled"))

    task = asyncio.create_task(write())
    await asyncio.sleep(0)  # its statements ran: it now waits for the COMMIT
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await insert(sqlite_db, "next")  # queued behind that COMMIT
    assert await bodies(sqlite_db) == ["cancelled", "next"] and called == ["cancelled"]


async def test_closing_commits_a_group_whose_commit_is_still_queued(tmp_path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/close.db")
    await database.create_tables(NOTES)
    writer = asyncio.create_task(insert(database, "before close"))
    await asyncio.sleep(0)
    await database.close()
    await writer
    assert await bodies(database) == ["before close"]  # reopened
    await database.close()


async def test_a_writer_whose_transaction_sqlite_rolled_back_fails_its_group_with_a_transient_error(
    sqlite_db: SqliteDatabase,
) -> None:
    await sqlite_db.create_tables(NOTES)

    async def roll_back_everything() -> None:
        async with sqlite_db.transaction() as tx:
            await tx.execute("ROLLBACK")  # what SQLite does itself on a full disk or an I/O error
            raise OSError("disk full")

    outcomes = await asyncio.gather(
        insert(sqlite_db, "earlier"),
        roll_back_everything(),
        insert(sqlite_db, "later"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ServiceUnavailable)  # it was in the group SQLite rolled back
    assert isinstance(outcomes[1], OSError)
    assert outcomes[2] is None  # it began a new group
    assert await bodies(sqlite_db) == ["later"]


async def test_the_wait_for_the_writer_and_its_commit_is_counted_for_the_task_that_waited(
    sqlite_db: SqliteDatabase,
) -> None:
    await sqlite_db.create_tables(NOTES)
    before = writer_waits()
    stopwatch, started = loop_stopwatch(), time.perf_counter()
    await insert(sqlite_db, "mine")
    waited = writer_waits() - before
    assert waited > 0
    assert stopwatch() == pytest.approx(time.perf_counter() - started - waited, abs=0.001)
    await asyncio.create_task(insert(sqlite_db, "another task's"))
    assert writer_waits() - before == waited  # that task's wait is its own
