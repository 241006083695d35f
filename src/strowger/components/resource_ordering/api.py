"""TMF652 Resource Ordering v4, declared on the TMF toolkit (read side and hub).

ROM creates and runs resource orders itself, from the commands SOM sends
(:mod:`strowger.components.resource_ordering.service`); the API exposes them:
``GET /resourceOrder[/{id}]``, ``GET /cancelResourceOrder[/{id}]``, ``/hub``
and ``/openapi.json`` under ``/tmf-api/resourceOrdering/v4`` (the v4 basePath).

Why no POST: an order posted here would be stored but never executed, since
execution is driven by the fulfilment saga; and ROM runs an order from
``acknowledged`` to a final state inside one transaction, so there is never an
order in flight that a ``cancelResourceOrder`` could stop. Releasing resources is
a new order of ``delete`` items (``ReleaseResources``), as TMF652 models it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import APIRouter

from strowger.components.ordering.states import ResourceOrderState as State
from strowger.events.topics import RESOURCE_EVENTS
from strowger.store.db import Database
from strowger.tmf.hubs import CallbackGuard
from strowger.tmf.resources import (
    EventKind,
    EventSink,
    Lifecycle,
    Operation,
    ResourceType,
    TmfApi,
    load_definitions,
    openapi_schemas,
    spec_validator,
)
from strowger.tmf.router import tmf_router

BASE_PATH = "/tmf-api/resourceOrdering/v4"
_SCHEMA_FILE = "tmf652-v4.0.0-schemas.json"

# ResourceOrderStateType (TMF652 user guide): acknowledged → inProgress → a final state;
# rejected/cancelled end an order before it runs. Final states have no way out.
RESOURCE_ORDER_STATE = Lifecycle(
    attribute="state",
    initial=State.ACKNOWLEDGED,
    transitions={
        State.ACKNOWLEDGED: frozenset({State.IN_PROGRESS, State.REJECTED, State.PENDING, State.CANCELLED}),
        State.PENDING: frozenset({State.IN_PROGRESS, State.CANCELLED, State.ASSESSING_CANCELLATION}),
        State.HELD: frozenset({State.IN_PROGRESS, State.CANCELLED, State.ASSESSING_CANCELLATION}),
        State.IN_PROGRESS: frozenset(
            {State.COMPLETED, State.FAILED, State.PARTIAL, State.HELD, State.ASSESSING_CANCELLATION}
        ),
        State.ASSESSING_CANCELLATION: frozenset({State.PENDING_CANCELLATION, State.IN_PROGRESS}),
        State.PENDING_CANCELLATION: frozenset({State.CANCELLED}),
        State.COMPLETED: frozenset(),
        State.FAILED: frozenset(),
        State.PARTIAL: frozenset(),
        State.REJECTED: frozenset(),
        State.CANCELLED: frozenset(),
    },
)

_READ_ONLY = frozenset({Operation.LIST, Operation.RETRIEVE})


@cache
def definitions() -> Mapping[str, Any]:
    return load_definitions(__package__ or "strowger.components.resource_ordering", _SCHEMA_FILE)


RESOURCE_ORDER = ResourceType(
    name="resourceOrder",
    type_name="ResourceOrder",
    validate=spec_validator(definitions(), "ResourceOrder"),
    last_update=None,  # TMF652 v4 ResourceOrder has no lastUpdate attribute
    lifecycle=RESOURCE_ORDER_STATE,
    events=frozenset({EventKind.CREATE, EventKind.STATE_CHANGE}),
    schema_name="ResourceOrder",
    operations=_READ_ONLY,
)

CANCEL_RESOURCE_ORDER = ResourceType(
    name="cancelResourceOrder",
    type_name="CancelResourceOrder",
    validate=spec_validator(definitions(), "CancelResourceOrder"),
    last_update=None,
    events=frozenset({EventKind.CREATE, EventKind.STATE_CHANGE}),
    schema_name="CancelResourceOrder",
    operations=_READ_ONLY,
)

RESOURCE_ORDERING_API = TmfApi(
    name="resourceOrdering",
    base_path=BASE_PATH,
    title="TMF652 Resource Ordering",
    version="4.0.0",
    resources=(RESOURCE_ORDER, CANCEL_RESOURCE_ORDER),
    topic=RESOURCE_EVENTS.name,
    producer="rom",
    schemas=openapi_schemas(definitions()),
)


def resource_ordering_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """TMF652 (``resourceOrder``, ``cancelResourceOrder``, ``/hub``, openapi) under ``BASE_PATH``."""
    return tmf_router(RESOURCE_ORDERING_API, database, event_sink, guard or CallbackGuard())
