"""The database port's contract, subclassed for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from strowger.store.db import Database, TableSet

NOTES = TableSet(
    "notes",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL UNIQUE)"
    ],
    postgresql=["CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL UNIQUE)"],
)


class DatabaseContract:
    @pytest.fixture
    def database(self) -> Database:
        raise NotImplementedError

    async def test_committed_writes_are_visible_to_readers(self, database: Database) -> None:
        await database.create_tables(NOTES)
        async with database.transaction() as tx:
            assert await tx.execute("INSERT INTO notes (body) VALUES (?)", ("first",)) == 1
            await tx.executemany("INSERT INTO notes (body) VALUES (?)", [("second",), ("third",)])
        rows = await database.fetchall("SELECT body FROM notes ORDER BY id")
        assert [row[0] for row in rows] == ["first", "second", "third"]

    async def test_a_large_batch_insert_keeps_the_rows_order_and_values(self, database: Database) -> None:
        # 1,000 rows: PostgreSQL sends them as multi-row INSERTs of 256, 256, 256, 128, 64, 32, 8.
        await database.create_tables(NOTES)
        bodies = [f"note {n} 100% {'?' if n % 7 == 0 else ''}" for n in range(1000)]
        async with database.transaction() as tx:
            await tx.executemany("INSERT INTO notes (body) VALUES (?)", [(body,) for body in bodies])
        rows = await database.fetchall("SELECT body FROM notes ORDER BY id")
        assert [row[0] for row in rows] == bodies  # serial ids follow the rows' order

    async def test_a_batch_insert_ignoring_conflicts_skips_duplicates_even_within_the_batch(
        self, database: Database
    ) -> None:
        await database.create_tables(NOTES)
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("old",))
            await tx.executemany(
                "INSERT INTO notes (body) VALUES (?) ON CONFLICT (body) DO NOTHING",
                [("old",), ("a",), ("b",), ("a",), ("c",)],
            )
        rows = await database.fetchall("SELECT body FROM notes ORDER BY id")
        assert [row[0] for row in rows] == ["old", "a", "b", "c"]

    async def test_a_batch_insert_with_a_duplicate_fails_as_a_whole(self, database: Database) -> None:
        await database.create_tables(NOTES)
        with pytest.raises(Exception):  # noqa: B017 (each driver raises its own IntegrityError)
            async with database.transaction() as tx:
                await tx.executemany("INSERT INTO notes (body) VALUES (?)", [("x",), ("y",), ("x",)])
        assert await database.fetchone("SELECT COUNT(*) FROM notes") == (0,)

    async def test_an_exception_rolls_the_whole_transaction_back(self, database: Database) -> None:
        await database.create_tables(NOTES)
        with pytest.raises(RuntimeError):
            async with database.transaction() as tx:
                await tx.execute("INSERT INTO notes (body) VALUES (?)", ("lost",))
                raise RuntimeError("boom")
        assert await database.fetchone("SELECT COUNT(*) FROM notes") == (0,)

    async def test_on_commit_callbacks_run_after_commit_only(self, database: Database) -> None:
        await database.create_tables(NOTES)
        calls: list[str] = []
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("x",))
            tx.on_commit(lambda: calls.append("committed"))
            assert calls == []
        assert calls == ["committed"]
        with pytest.raises(RuntimeError):
            async with database.transaction() as tx:
                tx.on_commit(lambda: calls.append("rolled back"))
                raise RuntimeError
        assert calls == ["committed"]

    async def test_concurrent_transactions_commit_or_fail_each_on_their_own(self, database: Database) -> None:
        await database.create_tables(NOTES)

        async def write(n: int) -> None:
            async with database.transaction() as tx:
                await tx.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n}",))
                if n == 4:
                    raise LookupError("the fifth writer fails")

        outcomes = await asyncio.gather(*(write(n) for n in range(10)), return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [type(None)] * 4 + [LookupError] + [type(None)] * 5
        rows = await database.fetchall("SELECT body FROM notes ORDER BY body")
        assert [row[0] for row in rows] == [f"note {n}" for n in range(10) if n != 4]

    async def test_on_commit_callbacks_run_in_their_own_transactions_context(
        self, database: Database
    ) -> None:
        await database.create_tables(NOTES)
        writer: contextvars.ContextVar[str] = contextvars.ContextVar("writer")
        seen: list[tuple[str, str]] = []

        async def write(name: str) -> None:
            writer.set(name)
            async with database.transaction() as tx:
                await tx.execute("INSERT INTO notes (body) VALUES (?)", (name,))
                tx.on_commit(lambda: seen.append((name, writer.get())))

        await asyncio.gather(*(write(name) for name in ("a", "b", "c")))
        assert sorted(seen) == [("a", "a"), ("b", "b"), ("c", "c")]

    async def test_placeholders_and_percent_signs_are_handled(self, database: Database) -> None:
        await database.create_tables(NOTES)
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("50% off",))
            row = await tx.fetchone("SELECT body FROM notes WHERE body LIKE '%off' AND id > ?", (0,))
        assert row == ("50% off",)

    async def test_savepoints_undo_part_of_a_transaction(self, database: Database) -> None:
        await database.create_tables(NOTES)
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("kept",))
            await tx.execute("SAVEPOINT one")
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("undone",))
            await tx.execute("ROLLBACK TO SAVEPOINT one")
            await tx.execute("RELEASE SAVEPOINT one")
        rows = await database.fetchall("SELECT body FROM notes")
        assert rows == [("kept",)]

    async def test_savepoint_scope_undoes_only_its_statements_and_reraises(self, database: Database) -> None:
        await database.create_tables(NOTES)
        async with database.transaction() as tx:
            async with tx.savepoint("kept_scope"):
                await tx.execute("INSERT INTO notes (body) VALUES (?)", ("kept",))
            with pytest.raises(LookupError):
                async with tx.savepoint("failed_scope"):
                    await tx.execute("INSERT INTO notes (body) VALUES (?)", ("undone",))
                    raise LookupError("the handler failed")
            # the transaction is still usable after the failed scope: a failure can be recorded
            await tx.execute("INSERT INTO notes (body) VALUES (?)", ("after",))
        rows = await database.fetchall("SELECT body FROM notes ORDER BY id")
        assert rows == [("kept",), ("after",)]

    async def test_a_savepoint_name_must_be_an_identifier(self, database: Database) -> None:
        async with database.transaction() as tx:
            with pytest.raises(ValueError, match="not a savepoint name"):
                async with tx.savepoint("x; DROP TABLE notes"):
                    pass

    async def test_create_tables_is_idempotent(self, database: Database) -> None:
        await database.create_tables(NOTES)
        await database.create_tables(NOTES)
        assert await database.fetchone("SELECT COUNT(*) FROM notes") == (0,)
