"""SQLite's WAL is copied into the database file by the database's own checkpoint thread, not
inside a commit on the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from strowger.store.sqlite import SqliteDatabase

ROW = b"x" * 1000


async def _write(database: SqliteDatabase, rows: int) -> None:
    async with database.transaction() as tx:
        await tx.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, body BLOB)")
        await tx.executemany("INSERT INTO blobs (body) VALUES (?)", [(ROW,)] * rows)


async def test_the_writer_never_checkpoints_in_a_commit(tmp_path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/x.db", checkpoint_interval_s=3600)
    try:
        await _write(database, 6000)  # ~1,500 pages: past SQLite's default of 1,000 per checkpoint
        assert (tmp_path / "x.db").stat().st_size < 100_000, "a commit checkpointed"
        frames, copied = await database.checkpoint()
        assert frames > 1000 and copied == frames
        assert (tmp_path / "x.db").stat().st_size > 6_000_000
    finally:
        await database.close()


async def test_the_checkpoint_thread_copies_the_wal_into_the_database_file(tmp_path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/x.db", checkpoint_interval_s=0.05)
    try:
        await _write(database, 2000)
        for _ in range(100):
            if (tmp_path / "x.db").stat().st_size > 2_000_000:
                break
            await asyncio.sleep(0.05)
        assert (tmp_path / "x.db").stat().st_size > 2_000_000, "nothing was checkpointed"
        async with database.snapshot() as tx:  # and the rows read back whole
            assert await tx.fetchone("SELECT count(*), sum(length(body)) FROM blobs") == (2000, 2_000_000)
    finally:
        await database.close()


async def test_closing_stops_the_thread_and_a_reopened_database_reads_everything(tmp_path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/x.db", checkpoint_interval_s=0.05)
    await _write(database, 10)
    await database.close()
    assert not (tmp_path / "x.db-wal").exists() or (tmp_path / "x.db-wal").stat().st_size == 0
    reopened = SqliteDatabase(f"sqlite:///{tmp_path}/x.db")
    try:
        assert await reopened.fetchone("SELECT count(*) FROM blobs") == (10,)
    finally:
        await reopened.close()
