"""The activation simulator's consumer on ``oss.activation.commands``."""

from __future__ import annotations

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.activation.simulator import NetworkSimulator
from strowger.components.contract import ACTIVATE_SERVICE, ACTIVATION_COMMANDS, DEACTIVATE_SERVICE
from strowger.events.envelope import Envelope

CONSUMER_NAME = "activation"


def activation_consumer(simulator: NetworkSimulator, *, name: str = CONSUMER_NAME) -> Consumer:
    """Records each command in the unit of work; the reply follows now, or once the latency has passed."""

    async def execute(command: Envelope, uow: UnitOfWork) -> None:
        await simulator.handle(uow.tx, command)

    return Consumer(
        name=name,
        topics=(ACTIVATION_COMMANDS,),
        handler=execute,
        event_types=frozenset({ACTIVATE_SERVICE.name, DEACTIVATE_SERVICE.name}),
    )
