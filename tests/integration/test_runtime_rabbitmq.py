"""The runtime contract on RabbitMQ with PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from strowger.bus.port import Bus
from strowger.bus.rabbitmq import RabbitBus
from strowger.store.db import Database
from tests.conftest import delete_declared_topics
from tests.contract.runtime_contract import RuntimeContract

pytestmark = pytest.mark.integration


class TestRuntimeOnRabbitPostgres(RuntimeContract):
    @pytest.fixture
    async def database(self, postgres_db: Database) -> AsyncIterator[Database]:
        yield postgres_db

    @pytest.fixture
    async def bus(self, rabbitmq_url: str) -> AsyncIterator[Bus]:
        bus = RabbitBus(rabbitmq_url, publish_timeout=10.0)
        await bus.start()
        yield bus
        await delete_declared_topics(bus)
        await bus.stop()
