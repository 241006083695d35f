"""The projection contract on PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.projection_contract import ProjectionContract

pytestmark = pytest.mark.integration


class TestPostgresProjections(ProjectionContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db
