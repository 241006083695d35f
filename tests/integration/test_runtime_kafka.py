"""The runtime contract on Apache Kafka with PostgreSQL (the scale-out platform)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from strowger.bus.kafka import KafkaBus
from strowger.bus.port import Bus
from strowger.store.db import Database
from tests.contract.runtime_contract import RuntimeContract

pytestmark = pytest.mark.integration


class TestRuntimeOnKafkaPostgres(RuntimeContract):
    @pytest.fixture
    async def database(self, postgres_db: Database) -> AsyncIterator[Database]:
        yield postgres_db

    @pytest.fixture
    async def bus(self, kafka_url: str) -> AsyncIterator[Bus]:
        bus = KafkaBus(kafka_url, publish_timeout=10.0)
        await bus.start()
        yield bus
        await bus.stop()
