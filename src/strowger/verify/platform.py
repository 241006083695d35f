"""The platform under verification: ``bootstrap()``'s composition with short saga timings and fault hooks.

Verification needs two things ``bootstrap(settings)`` does not take: the
fulfilment saga's timings (seconds, not the production half-minute, so a
timeout path runs in a few seconds) and the command fault hook in front of the
executors. Everything else is the composition root's own wiring, called in the
same order, so what is verified is what ``strowger run`` runs.
"""

from __future__ import annotations

from datetime import timedelta

from strowger import bootstrap as root
from strowger.bootstrap import Platform
from strowger.components.faults import CommandFaults
from strowger.components.service_ordering.saga import FulfilmentTimings
from strowger.saga import RetryPolicy
from strowger.settings import Settings


def verification_timings(timeout: float = 2.0, attempts: int = 2) -> FulfilmentTimings:
    """Short timeouts and few attempts: every failure path ends within seconds."""
    backoff = timedelta(seconds=0.2)
    return FulfilmentTimings(
        timeout=timedelta(seconds=timeout),
        action_retry=RetryPolicy(max_attempts=attempts, backoff=backoff, retry_refusals=True),
        compensation_retry=RetryPolicy(max_attempts=attempts, backoff=backoff),
    )


def verification_platform(settings: Settings, timings: FulfilmentTimings, faults: CommandFaults) -> Platform:
    """The platform ``bootstrap(settings)`` builds, SOM on ``timings``, executors behind ``faults``."""
    platform = root.empty_platform(settings)
    root._backbone(platform)
    root._tmf_apis(platform)
    _ordering(platform, timings)
    root._downstream(platform)
    root._operations(platform)
    faults.install(platform)
    return platform


def _ordering(platform: Platform, timings: FulfilmentTimings) -> None:
    """``bootstrap._ordering`` with the saga timings given (the one difference)."""
    from strowger.components.ordering.wiring import install as install_ordering
    from strowger.components.service_ordering.wiring import install as install_service_ordering
    from strowger.projections.wiring import install as install_projections

    install_ordering(platform)
    install_projections(platform)
    install_service_ordering(platform, timings)
    root._executors(platform)
