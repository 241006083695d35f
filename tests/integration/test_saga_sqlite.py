from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.saga_contract import SagaContract


class TestSagaSqlite(SagaContract):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db
