"""Wiring of the projections into the platform: one live runner per projection, tailing the event store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from strowger.projections.engine import REGISTRY_TABLES, EventStoreSource, Projection, ProjectionRunner
from strowger.projections.orders import CustomerProductsProjection, OrderListProjection
from strowger.store.db import Database
from strowger.store.eventstore import open_event_store

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def builtin_projections() -> list[Projection]:
    """Every read model Strowger ships (``strowger projections`` works on these)."""
    return [OrderListProjection(), CustomerProductsProjection()]


def find_projection(name: str) -> Projection:
    for projection in builtin_projections():
        if projection.name == name:
            return projection
    known = ", ".join(projection.name for projection in builtin_projections())
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

    The event store's tables are created at start-up if no component did it yet
    (idempotent). Returns the runners so a component can wake them after an
    append: ``tx.on_commit(projections.notify)``.
    """
    source = event_store_source(platform.database)
    platform.add_tables(REGISTRY_TABLES)
    platform.on_startup(source.store.setup)
    runners = [
        ProjectionRunner(projection, source, platform.database, metrics=platform.metrics)
        for projection in (projections if projections is not None else builtin_projections())
    ]
    for runner in runners:
        platform.add_task(f"projection:{runner.name}", runner.run)
    return Projections(runners)
