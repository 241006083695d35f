"""Plugs SOM (TMF641 + the fulfilment saga orchestrator) into a :class:`~strowger.bootstrap.Platform`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.decomposition import Catalog
from strowger.components.ordering.validation import read_catalog, sample_technical_catalog
from strowger.components.service_ordering.api import sagas_router, service_ordering_router
from strowger.components.service_ordering.consumers import (
    product_order_consumer,
    reply_consumer,
    run_scheduler,
)
from strowger.components.service_ordering.saga import FulfilmentTimings, fulfilment_saga
from strowger.components.service_ordering.service import PRODUCER, VIEW_TABLES, ServiceOrdering
from strowger.components.service_ordering.settings import FulfilmentSettings
from strowger.ops.saga_metrics import SagaMetrics
from strowger.saga import SAGA_TABLES, SagaEngine, SagaRegistry, SagaStore
from strowger.settings import load_section
from strowger.store.db import Transaction
from strowger.store.eventstore import open_event_store
from strowger.tmf.hubs import HUB_TABLES, CallbackGuard

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

TICK_INTERVAL = 1.0  # seconds between scheduler passes (timeouts, retries, stuck sagas)


def build_service_ordering(platform: Platform, timings: FulfilmentTimings | None = None) -> ServiceOrdering:
    """SOM on the platform's database and outbox (no tasks, no routes: for CLIs and tests)."""
    database = platform.database
    technical = sample_technical_catalog()

    async def catalog(tx: Transaction) -> Catalog:
        return await read_catalog(tx, technical)

    sink = platform.sink(PRODUCER)
    registry = SagaRegistry([fulfilment_saga(timings or load_section(FulfilmentSettings).timings())])
    store = SagaStore(row_locks=database.kind == "postgresql")
    engine = SagaEngine(
        registry, sink, store=store, producer=PRODUCER, observer=SagaMetrics(platform.metrics)
    )
    return ServiceOrdering(database, open_event_store(database), sink, engine, catalog)


def install(platform: Platform, timings: FulfilmentTimings | None = None) -> ServiceOrdering:
    """Tables, the TMF641 and /sagas routes, the two consumers and the saga scheduler."""
    som = build_service_ordering(platform, timings)
    platform.add_tables(open_event_store(platform.database).tables, SAGA_TABLES, VIEW_TABLES, HUB_TABLES)
    guard = CallbackGuard.from_settings(platform.settings.hub_allowed_networks)
    platform.add_router(
        service_ordering_router(som, platform.database, guard),
        title="TMF641 Service Ordering",
        href=f"{som.base_path}/serviceOrder",
    )
    platform.add_router(sagas_router(som), title="Sagas (operator)", href="/sagas")
    platform.add_consumer(product_order_consumer(som))
    platform.add_consumer(reply_consumer(som))

    async def scheduler() -> None:
        await run_scheduler(som, TICK_INTERVAL)

    platform.add_task("service-ordering:saga-scheduler", scheduler)
    return som
