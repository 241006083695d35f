"""Plugs ROM (TMF652 resource orders on the resource pools) into a :class:`~strowger.bootstrap.Platform`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from strowger.components.resource_ordering.api import RESOURCE_ORDERING_API, resource_ordering_router
from strowger.components.resource_ordering.consumers import rom_consumer
from strowger.components.resource_ordering.pools import POOL_TABLES, pools_from_data
from strowger.components.resource_ordering.service import ResourceOrdering
from strowger.components.sample_catalog import sample_pools
from strowger.tmf.hubs import HUB_TABLES, CallbackGuard
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

log = logging.getLogger("strowger.rom")


def install(platform: Platform) -> ResourceOrdering:
    """The sample pools (installed at start-up, idempotently), the TMF652 API and the command consumer."""
    database = platform.database
    pools = pools_from_data(database, sample_pools())
    service = ResourceOrdering(database, pools, platform.sink(RESOURCE_ORDERING_API.producer))
    platform.add_tables(RESOURCE_TABLES, HUB_TABLES, POOL_TABLES)

    async def install_pools() -> None:
        await pools.install()
        log.info("resource pools installed", extra={"pools": len(pools.definitions)})

    platform.on_startup(install_pools, part="rom")
    guard = CallbackGuard.from_settings(platform.settings.hub_allowed_networks)
    platform.add_router(
        resource_ordering_router(database, platform.sink(RESOURCE_ORDERING_API.producer), guard),
        title="TMF652 Resource Ordering (OpenAPI)",
        href=f"{RESOURCE_ORDERING_API.base_path}/openapi.json",
    )
    platform.add_consumer(rom_consumer(service))
    return service
