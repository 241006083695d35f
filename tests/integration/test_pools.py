from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.pools_contract import PoolsContract

pytestmark = pytest.mark.integration


class TestSqlitePools(PoolsContract):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db


class TestPostgresPools(PoolsContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db
