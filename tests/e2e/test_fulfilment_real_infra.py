"""The whole platform on real infrastructure: PostgreSQL + Kafka, and PostgreSQL + RabbitMQ.

Each test gets a throwaway PostgreSQL schema (``database_schema``) and a bus
namespace of its own (``bus_namespace``: every topic and consumer group
prefixed), so runs on the shared brokers never see each other's events
(docs/verification.md explains the choice). The saga fault matrix of
``strowger verify sagas`` runs on them: a happy path per sample product, a
failure at each step (compensated), a compensation failure at each step
(quarantine, operator retry, compensated), then every invariant.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from strowger.settings import Settings
from strowger.store.postgres import PostgresDatabase
from strowger.verify.run import verify_sagas

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    database = PostgresDatabase(postgres_url, schema=name)
    await database.open()
    async with database.transaction() as tx:
        await tx.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await database.close()


def platform_settings(database_url: str, bus_url: str, schema: str) -> Settings:
    return Settings(
        database_url=database_url,
        database_schema=schema,
        bus_url=bus_url,
        bus_namespace=f"t{uuid.uuid4().hex[:10]}",
        outbox_poll_interval=0.1,
    )


async def assert_matrix_holds(settings: Settings, *, step_timeout: float = 4.0) -> None:
    report = await verify_sagas(settings, timeout=step_timeout, budget=240.0)
    problems = [
        f"{outcome.injection.label}: {problem}"
        for outcome, verdict in zip(report.outcomes, report.verdicts, strict=True)
        for problem in [*outcome.problems, *(p for found in verdict.problems.values() for p in found)]
    ]
    assert not problems, problems
    assert len(report.outcomes) == 12
    assert sum(outcome.quarantined for outcome in report.outcomes) == 3


async def test_fault_matrix_on_postgresql_and_kafka(postgres_url: str, kafka_url: str, schema: str) -> None:
    await assert_matrix_holds(platform_settings(postgres_url, kafka_url, schema))


async def test_fault_matrix_on_postgresql_and_rabbitmq(
    postgres_url: str, rabbitmq_url: str, schema: str
) -> None:
    # RabbitMQ members take a few seconds to win their partition leases: longer step timeouts.
    await assert_matrix_holds(platform_settings(postgres_url, rabbitmq_url, schema), step_timeout=12.0)
