from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.database_contract import DatabaseContract


class TestSqlite(DatabaseContract):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db


@pytest.mark.integration
class TestPostgres(DatabaseContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db
