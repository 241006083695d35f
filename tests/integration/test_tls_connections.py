"""The database connection honours TLS settings given in its URL (issue 8: TLS from settings)."""

from __future__ import annotations

import uuid

import pytest

from strowger.store.postgres import PostgresDatabase

pytestmark = pytest.mark.integration


async def test_postgresql_over_tls_when_the_url_requires_it(postgres_url: str) -> None:
    separator = "&" if "?" in postgres_url else "?"
    database = PostgresDatabase(
        f"{postgres_url}{separator}sslmode=require", schema=f"tls_{uuid.uuid4().hex[:8]}"
    )
    await database.open()
    try:
        row = await database.fetchone("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row is not None and row[0] is True
    finally:
        async with database.transaction() as tx:
            await tx.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
        await database.close()
