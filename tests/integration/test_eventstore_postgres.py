"""The event store contract on PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.eventstore_contract import EventStoreContract

pytestmark = pytest.mark.integration


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db
