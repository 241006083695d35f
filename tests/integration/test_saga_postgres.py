from __future__ import annotations

import pytest

from strowger.store.db import Database
from tests.contract.saga_contract import SagaContract

pytestmark = pytest.mark.integration


class TestSagaPostgres(SagaContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db
