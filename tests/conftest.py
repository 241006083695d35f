"""Shared fixtures: where the real services are, and how a missing one is reported.

With CI=true (or STROWGER_REQUIRE_SERVICES=true) a service that cannot be
reached FAILS the tests that need it: a skip would hide a broken set-up.
Elsewhere such tests are skipped with the reason, so unit tests run anywhere.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.rabbitmq import RabbitBus
from strowger.store.db import Database
from strowger.store.postgres import PostgresDatabase
from strowger.store.sqlite import SqliteDatabase

POSTGRES_URL = os.environ.get(
    "STROWGER_TEST_POSTGRES_URL", "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
)
KAFKA_URL = os.environ.get("STROWGER_TEST_KAFKA_URL", "kafka://127.0.0.1:9092")
RABBITMQ_URL = os.environ.get("STROWGER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def services_required() -> bool:
    flags = (os.environ.get("STROWGER_REQUIRE_SERVICES", ""), os.environ.get("CI", ""))
    return any(flag.lower() in ("1", "true", "yes") for flag in flags)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    if parts.scheme == "kafka":
        host, _, port_text = parts.netloc.split(",")[0].rpartition(":")
        port = int(port_text or default_port)
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> str:
    """``url`` if the service answers; otherwise fail (CI) or skip (elsewhere) with the reason."""
    if _reachable(url, default_port):
        return url
    reason = f"{name} is not reachable at {url}: start it with `scripts/services up`"
    if services_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_service("PostgreSQL", POSTGRES_URL, 5432)


@pytest.fixture(scope="session")
def kafka_url() -> str:
    return require_service("Kafka", KAFKA_URL, 9092)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return require_service("RabbitMQ", RABBITMQ_URL, 5672)


@pytest.fixture
async def sqlite_db(tmp_path: os.PathLike[str]) -> AsyncIterator[Database]:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/test.db")
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def postgres_db(postgres_url: str) -> AsyncIterator[Database]:
    """A PostgreSQL database in a schema of its own, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    database = PostgresDatabase(postgres_url, schema=schema)
    await database.open()
    yield database
    async with database.transaction() as tx:
        await tx.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await database.close()


@pytest.fixture
async def external_bus(sqlite_db: Database) -> AsyncIterator[EmbeddedBus]:
    """An embedded log in ANOTHER database than the outbox's: a relay must publish, wait for the
    log's commit, then mark its rows (the path a broker such as Kafka takes)."""
    bus = EmbeddedBus("embedded://", database=sqlite_db)
    await bus.start()
    yield bus
    await bus.stop()


def unique(prefix: str) -> str:
    """A name no other test uses (topics, groups, queues on shared brokers)."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


async def delete_declared_topics(bus: RabbitBus, groups: Sequence[str] = ()) -> None:
    """Delete the topics ``bus`` declared, with ``groups``' state on them: the broker keeps every
    stream a test makes, and a developer's broker must not fill up (hundreds of them slowed it
    until it failed)."""
    for name in bus.declared_topics():
        await bus.delete_topic(name, groups)
