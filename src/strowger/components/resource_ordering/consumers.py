"""ROM's consumer: executes the resource commands (the saga's and reconciliation's) and replies on
``oss.resource.events``."""

from __future__ import annotations

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.contract import (
    ALLOCATE_RESOURCES,
    RECLAIM_RESOURCES,
    RELEASE_RESOURCES,
    RESOURCE_COMMANDS,
    RESOURCE_EVENTS,
)
from strowger.components.resource_ordering.service import ResourceOrdering
from strowger.events.envelope import Envelope

CONSUMER_NAME = "rom"


def rom_consumer(service: ResourceOrdering, *, name: str = CONSUMER_NAME) -> Consumer:
    """Allocate/release in the unit of work; the reply goes out through the outbox in the same transaction."""

    async def execute(command: Envelope, uow: UnitOfWork) -> None:
        reply = await service.handle(uow.tx, command)
        await uow.emit(reply, RESOURCE_EVENTS)

    return Consumer(
        name=name,
        topics=(RESOURCE_COMMANDS,),
        handler=execute,
        event_types=frozenset({ALLOCATE_RESOURCES.name, RELEASE_RESOURCES.name, RECLAIM_RESOURCES.name}),
    )
