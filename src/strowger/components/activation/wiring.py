"""Plugs the network activation simulator into a :class:`~strowger.bootstrap.Platform`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.activation.api import activation_router
from strowger.components.activation.consumers import activation_consumer
from strowger.components.activation.faults import ActivationSettings
from strowger.components.activation.simulator import ACTIVATION_TABLES, NetworkSimulator
from strowger.settings import load_section

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform, settings: ActivationSettings | None = None) -> NetworkSimulator:
    """The command consumer, the scheduler of delayed replies and the operator endpoints.

    ``settings`` default to ``STROWGER_ACTIVATION_*`` from the environment.
    """
    simulator = NetworkSimulator(
        platform.database, platform.sink("activation"), settings or load_section(ActivationSettings)
    )
    platform.add_tables(ACTIVATION_TABLES)
    platform.add_consumer(activation_consumer(simulator))
    platform.add_task("activation:scheduler", simulator.run)
    platform.add_router(
        activation_router(simulator), title="Activation simulator faults", href="/activation/faults"
    )
    return simulator
