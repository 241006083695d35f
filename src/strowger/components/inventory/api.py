"""TMF637 Product, TMF638 Service and TMF639 Resource Inventory v4, declared on the TMF toolkit.

Schemas are the v4.0.0 definitions, vendored next to this module (two spec
defects corrected there, see docs/tmf-apis.md). Each inventory holds one
resource with one status attribute whose enumeration comes from the spec; the
moves between its values are enforced on PATCH (409 otherwise) and on the
server-side write path (:mod:`strowger.components.inventory.service`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import APIRouter

from strowger.events.topics import INVENTORY_EVENTS, RESOURCE_EVENTS, SERVICE_EVENTS
from strowger.store.db import Database
from strowger.tmf.hubs import CallbackGuard
from strowger.tmf.resources import (
    EventSink,
    Lifecycle,
    ResourceService,
    ResourceType,
    TmfApi,
    load_definitions,
    openapi_schemas,
    spec_validator,
)
from strowger.tmf.router import tmf_router

PRODUCT_BASE_PATH = "/tmf-api/productInventory/v4"
SERVICE_BASE_PATH = "/tmf-api/serviceInventory/v4"
RESOURCE_BASE_PATH = "/tmf-api/resourceInventoryManagement/v4"


def _moves(**transitions: tuple[str, ...]) -> dict[str, frozenset[str]]:
    return {state: frozenset(targets) for state, targets in transitions.items()}


# ProductStatusType (TMF637 user guide): an ordered product becomes active, may be suspended,
# and ends terminated; cancelled (order withdrawn) and aborted (order failed) end it before.
PRODUCT_STATUS = Lifecycle(
    attribute="status",
    initial="created",
    transitions=_moves(
        created=("pendingActive", "active", "cancelled", "aborted"),
        pendingActive=("active", "cancelled", "aborted"),
        active=("suspended", "pendingTerminate", "terminated"),
        suspended=("active", "pendingTerminate", "terminated"),
        pendingTerminate=("terminated", "active"),  # active again: the termination was withdrawn
        terminated=(),
        cancelled=(),
        aborted=(),
    ),
)

# ServiceStateType (TMF638): design moves forward only; a service toggles active/inactive
# once it exists, and terminated is final.
SERVICE_STATE = Lifecycle(
    attribute="state",
    initial="feasibilityChecked",
    transitions=_moves(
        feasibilityChecked=("designed", "reserved", "inactive", "active", "terminated"),
        designed=("reserved", "inactive", "active", "terminated"),
        reserved=("inactive", "active", "terminated"),
        inactive=("active", "terminated"),
        active=("inactive", "terminated"),
        terminated=(),
    ),
)

# ResourceStatusType (TMF639): no final state (a retired resource is deleted). Only an
# available resource can be reserved, and a suspended one must be made available or
# standby again before use; alarm and unknown can be entered from anywhere.
RESOURCE_STATUS = Lifecycle(
    attribute="resourceStatus",
    initial="standby",
    transitions=_moves(
        standby=("available", "alarm", "suspended", "unknown"),
        available=("reserved", "standby", "alarm", "suspended", "unknown"),
        reserved=("available", "alarm", "suspended", "unknown"),
        alarm=("available", "standby", "reserved", "suspended", "unknown"),
        suspended=("available", "standby", "alarm", "unknown"),
        unknown=("standby", "available", "reserved", "alarm", "suspended"),
    ),
)


@cache
def _definitions(filename: str) -> Mapping[str, Any]:
    return load_definitions(__package__ or "strowger.components.inventory", filename)


def _inventory_api(
    *,
    name: str,
    base_path: str,
    title: str,
    schema_file: str,
    topic: str,
    resource: str,
    type_name: str,
    lifecycle: Lifecycle,
    keep_history: bool = False,
) -> TmfApi:
    definitions = _definitions(schema_file)
    return TmfApi(
        name=name,
        base_path=base_path,
        title=title,
        version="4.0.0",
        resources=(
            ResourceType(
                name=resource,
                type_name=type_name,
                validate=spec_validator(definitions, type_name),
                last_update=None,  # the v4 inventory resources have no lastUpdate attribute
                lifecycle=lifecycle,
                schema_name=type_name,
                keep_history=keep_history,
            ),
        ),
        topic=topic,
        producer="inventory",
        schemas=openapi_schemas(definitions),
    )


PRODUCT_INVENTORY_API = _inventory_api(
    name="productInventory",
    base_path=PRODUCT_BASE_PATH,
    schema_file="tmf637-v4.0.0-schemas.json",
    title="TMF637 Product Inventory",
    topic=INVENTORY_EVENTS.name,
    resource="product",
    type_name="Product",
    lifecycle=PRODUCT_STATUS,
    keep_history=True,  # TMF637 ?asOf= answers from the inventory's own product history
)
SERVICE_INVENTORY_API = _inventory_api(
    name="serviceInventory",
    base_path=SERVICE_BASE_PATH,
    schema_file="tmf638-v4.0.0-schemas.json",
    title="TMF638 Service Inventory",
    topic=SERVICE_EVENTS.name,
    resource="service",
    type_name="Service",
    lifecycle=SERVICE_STATE,
)
RESOURCE_INVENTORY_API = _inventory_api(
    name="resourceInventoryManagement",
    base_path=RESOURCE_BASE_PATH,
    schema_file="tmf639-v4.0.0-schemas.json",
    title="TMF639 Resource Inventory",
    topic=RESOURCE_EVENTS.name,
    resource="resource",
    type_name="Resource",
    lifecycle=RESOURCE_STATUS,
)


def product_inventory_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """TMF637 (``product``, ``/hub``, ``/openapi.json``) under ``/tmf-api/productInventory/v4``.

    ``GET product`` and ``GET product/{id}`` also take ``asOf`` (see :mod:`.asof`).
    """
    from strowger.components.inventory.asof import add_as_of_routes  # it needs this module's API

    router = tmf_router(PRODUCT_INVENTORY_API, database, event_sink, guard or CallbackGuard())
    (resource,) = PRODUCT_INVENTORY_API.resources
    return add_as_of_routes(router, ResourceService(PRODUCT_INVENTORY_API, resource, database, event_sink))


def service_inventory_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """TMF638 (``service``, ``/hub``, ``/openapi.json``) under ``/tmf-api/serviceInventory/v4``."""
    return tmf_router(SERVICE_INVENTORY_API, database, event_sink, guard or CallbackGuard())


def resource_inventory_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """TMF639 (``resource``, ``/hub``, openapi) under ``/tmf-api/resourceInventoryManagement/v4``."""
    return tmf_router(RESOURCE_INVENTORY_API, database, event_sink, guard or CallbackGuard())
