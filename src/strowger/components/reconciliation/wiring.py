"""Plugs the reconciliation job into a :class:`~strowger.bootstrap.Platform` (a periodic task)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from strowger.components.inventory.service import ServiceInventory
from strowger.components.reconciliation.reconcile import Reconciler
from strowger.components.resource_ordering.pools import pools_from_data
from strowger.components.sample_catalog import sample_pools

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

log = logging.getLogger("strowger.reconciliation")


def reconciler(platform: Platform) -> Reconciler:
    sink = platform.sink("reconciliation")
    pools = pools_from_data(platform.database, sample_pools())
    return Reconciler(platform.database, sink, pools, ServiceInventory(platform.database, sink))


def install(platform: Platform, interval: float = 300.0) -> Reconciler:
    """Reconcile every ``interval`` seconds (repairing the safe cases) for the life of the platform."""
    job = reconciler(platform)

    async def run() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                drift = await job.run()
            except Exception:
                log.exception("reconciliation pass failed; next pass in %.0fs", interval)
                continue
            if drift:
                log.warning("reconciliation found %d drift(s)", len(drift), extra={"drift": len(drift)})

    platform.add_task("reconciliation", run)
    return job
