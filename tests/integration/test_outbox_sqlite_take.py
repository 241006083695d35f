"""SQLite's relay takes the unpublished rows through an index: its cost must not grow with the
published history the outbox keeps until retention purges it."""

from __future__ import annotations

import pytest

from strowger.store.db import Database
from strowger.store.outbox import OUTBOX_TABLES, TAKE_SQLITE

pytestmark = pytest.mark.integration


async def test_the_take_reads_the_unpublished_rows_by_index_not_the_whole_table(
    sqlite_db: Database,
) -> None:
    await sqlite_db.create_tables(OUTBOX_TABLES)
    plan = await sqlite_db.fetchall(f"EXPLAIN QUERY PLAN {TAKE_SQLITE}", (500,))
    steps = [str(row[3]) for row in plan]
    assert steps == ["SCAN outbox USING INDEX outbox_unpublished_by_id"], steps


async def test_an_outbox_made_before_keeps_only_the_index_the_take_uses(sqlite_db: Database) -> None:
    await sqlite_db.create_tables(OUTBOX_TABLES)
    async with sqlite_db.transaction() as tx:  # as a release before this one created it
        await tx.execute(
            "CREATE INDEX outbox_unpublished ON outbox (partition, id) WHERE published_at IS NULL"
        )
    await sqlite_db.create_tables(OUTBOX_TABLES)
    rows = await sqlite_db.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'"
    )
    assert sorted(name for (name,) in rows) == ["outbox_published", "outbox_unpublished_by_id"]
