"""The projection contract on SQLite."""

from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.projection_contract import ProjectionContract

pytestmark = pytest.mark.integration


class TestSqliteProjections(ProjectionContract):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db
