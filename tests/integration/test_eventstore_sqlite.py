"""The event store contract on SQLite."""

from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.eventstore_contract import EventStoreContract


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    def database(self, sqlite_db: Database) -> Database:
        return sqlite_db
