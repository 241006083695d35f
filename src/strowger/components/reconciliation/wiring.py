"""Plugs the reconciliation job into a :class:`~strowger.bootstrap.Platform` (a periodic task)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from strowger.components.inventory.states import SERVICE_STATE_VIEW
from strowger.components.reconciliation.reconcile import Reconciler
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

log = logging.getLogger("strowger.reconciliation")


def reconciler(platform: Platform) -> Reconciler:
    return Reconciler(platform.database, platform.sink("reconciliation"))


def install(platform: Platform, interval: float = 300.0) -> Reconciler:
    """Reconcile every ``interval`` seconds (repairing the safe cases) for the life of the platform."""
    job = reconciler(platform)
    # The inventory's service_state view, where every component shares one schema; in a split
    # cluster it is a borrowed name (provisioned in the inventory's schema), so this skips it.
    platform.add_tables(RESOURCE_TABLES, SERVICE_STATE_VIEW)

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
