"""Wiring of the projections into the platform: one live runner per projection, tailing the event store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from strowger.projections.engine import (
    REGISTRY_TABLES,
    EventSource,
    EventStoreSource,
    Projection,
    ProjectionRunner,
)
from strowger.projections.orders import CustomerProductsProjection, OrderListProjection
from strowger.projections.sagas import SAGA_LOG_ORDER, SagaLogSource, SagaOverviewProjection
from strowger.saga.store import SAGA_TABLES
from strowger.store.db import Database
from strowger.store.eventstore import open_event_store

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def builtin_projections() -> list[Projection]:
    """The read models of the event store Strowger ships (``strowger projections`` works on these)."""
    return [OrderListProjection(), CustomerProductsProjection()]


def saga_projections() -> list[Projection]:
    """The read models of the saga log (:mod:`strowger.projections.sagas`)."""
    return [SagaOverviewProjection()]


def source_for(projection: Projection, database: Database) -> EventSource:
    """Where ``projection``'s events come from: the saga log for the saga views, else the event store."""
    if isinstance(projection, SagaOverviewProjection):
        return SagaLogSource(database)
    return event_store_source(database)


def find_projection(name: str) -> Projection:
    for projection in builtin_projections():
        if projection.name == name:
            return projection
    for projection in saga_projections():
        if projection.name == name:
            return projection
    known = ", ".join(projection.name for projection in [*builtin_projections(), *saga_projections()])
    raise KeyError(f"no projection {name!r}; known: {known}")


def event_store_source(database: Database) -> EventStoreSource:
    return EventStoreSource(open_event_store(database))


class Projections:
    """The live runners of one process; :meth:`notify` wakes them (call it after appending events)."""

    def __init__(self, runners: Sequence[ProjectionRunner]) -> None:
        self.runners = list(runners)

    def notify(self) -> None:
        for runner in self.runners:
            runner.notify()

    def runner(self, name: str) -> ProjectionRunner:
        return next(runner for runner in self.runners if runner.name == name)


def install(platform: Platform, projections: Sequence[Projection] | None = None) -> Projections:
    """Run a live runner for each projection for the life of the platform.

    The event store's and the saga engine's tables are created at start-up if
    no component did it yet (idempotent), with the saga log's commit-order
    column (:data:`~strowger.projections.sagas.SAGA_LOG_ORDER`). Returns the
    runners so a component can wake them after an append:
    ``tx.on_commit(projections.notify)``.
    """
    source = event_store_source(platform.database)
    platform.add_tables(REGISTRY_TABLES, SAGA_TABLES, SAGA_LOG_ORDER)
    platform.on_startup(source.store.setup)
    chosen = projections if projections is not None else [*builtin_projections(), *saga_projections()]
    runners = [
        ProjectionRunner(
            projection,
            source
            if not isinstance(projection, SagaOverviewProjection)
            else SagaLogSource(platform.database),
            platform.database,
            metrics=platform.metrics,
            pacer=platform.background_pacer,
        )
        for projection in chosen
    ]
    for runner in runners:
        platform.add_task(f"projection:{runner.name}", runner.run)
    return Projections(runners)
