"""The fulfilment contract: which commands and replies travel between SOM, ROM,
activation and the inventories, on which topics, carrying what.

Components never import each other; they import this module. Every command is a
``Category.COMMAND`` envelope sent by the SOM saga engine (its ``event_id`` is the
command id; ``requestId`` in the body deduplicates retries). Every reply is built
with ``command.caused(...)`` so its ``causation_id`` is the command id, and goes on
the executor's domain topic. A failure reply carries ``error`` (text) and
``permanent`` (bool): a permanent failure is not retried by the saga.

Flow for one product order (docs/fulfilment-model.md has the picture):

1. COM emits ``ProductOrderStateChangeEvent`` (state ``inProgress``) on bss.ordering.events.
2. SOM decomposes it (components/decomposition.py), creates a TMF641 serviceOrder
   whose ``externalReference`` names the product order (type ``ProductOrder``), and
   runs the fulfilment saga: ALLOCATE → ACTIVATE → RECORD_INVENTORY.
3. SOM emits ``ServiceOrderStateChangeEvent`` (completed / failed / cancelled) on
   oss.service.events; COM completes or fails the product order from it; billing
   and notifications react to the product order's own events (choreography).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strowger.events.topics import INVENTORY_COMMANDS

RESOURCE_COMMANDS = "oss.resource.commands"  # executed by ROM
ACTIVATION_COMMANDS = "oss.activation.commands"  # executed by the network activation simulator
RESOURCE_EVENTS = "oss.resource.events"  # ROM's replies and TMF652 notifications
SERVICE_EVENTS = "oss.service.events"  # SOM's, activation's and inventory's replies, TMF641 notifications
ORDERING_EVENTS = "bss.ordering.events"


@dataclass(frozen=True, slots=True)
class CommandKind:
    """A command, its topic, and the reply event types that answer it."""

    name: str
    topic: str
    succeeded: str
    failed: str


# ROM (TMF652): allocate every resource of the plan from its pool; reply with what was allocated.
# payload: {"requestId", "serviceOrderId", "productOrderId",
#           "resources": [{"ref", "specId", "name", "poolType", "poolScope"}]}
# success payload: {"resourceOrder": {<TMF652 resourceOrder>},
#                   "allocations": [{"ref", "poolType", "pool", "value"}]}
ALLOCATE_RESOURCES = CommandKind(
    "AllocateResources", RESOURCE_COMMANDS, "ResourcesAllocated", "ResourceAllocationFailed"
)
# payload: {"requestId", "serviceOrderId", "allocationRequestId"}  (releases what that request allocated)
RELEASE_RESOURCES = CommandKind(
    "ReleaseResources", RESOURCE_COMMANDS, "ResourcesReleased", "ResourceReleaseFailed"
)

# Activation: configure the network for the plan's activation steps; idempotent by requestId.
# payload: {"requestId", "serviceOrderId", "productOrderId", "steps": [{"operation", "target", "specId"}],
#           "allocations": [...]}
ACTIVATE_SERVICE = CommandKind(
    "ActivateService", ACTIVATION_COMMANDS, "ServiceActivated", "ServiceActivationFailed"
)
# payload: {"requestId", "serviceOrderId", "activationRequestId"}  (rolls back that configuration)
DEACTIVATE_SERVICE = CommandKind(
    "DeactivateService", ACTIVATION_COMMANDS, "ServiceDeactivated", "ServiceDeactivationFailed"
)

# Inventories: record the services (TMF638) and resources (TMF639) of the order as active.
# payload: {"requestId", "serviceOrderId", "productOrderId", "customerId",
#           "services": [{"id", "name", "specId", "state"}], "resources": [{"id", "name", "specId", "value"}]}
RECORD_INVENTORY = CommandKind(
    "RecordInventory", INVENTORY_COMMANDS.name, "InventoryRecorded", "InventoryRecordFailed"
)
# payload: {"requestId", "serviceOrderId", "recordRequestId"}  (services → terminated, resources → available)
REMOVE_INVENTORY = CommandKind(
    "RemoveInventory", INVENTORY_COMMANDS.name, "InventoryRemoved", "InventoryRemoveFailed"
)

ALL_COMMANDS = (
    ALLOCATE_RESOURCES,
    RELEASE_RESOURCES,
    ACTIVATE_SERVICE,
    DEACTIVATE_SERVICE,
    RECORD_INVENTORY,
    REMOVE_INVENTORY,
)

# Reconciliation's repairs (operations -> the data's owner), not saga commands: they are left out of
# ALL_COMMANDS, so SOM's reply consumer (REPLY_TYPES) never receives their replies. Each names
# exactly what drifted, so it is idempotent without a ledger: freeing a claim already free, or
# terminating a service that is no longer active, changes nothing.
# payload: {"requestId", "sagaId", "claims": [{"pool", "requestId"}]}  (the pool claims to free)
# success payload: {"requestId", "sagaId", "released": [{"pool", "requestId"}]}  (those that were held)
RECLAIM_RESOURCES = CommandKind(
    "ReclaimResources", RESOURCE_COMMANDS, "ResourcesReclaimed", "ResourceReclaimFailed"
)
# payload: {"requestId", "sagaId", "services": [<service id>]}  (each one still active -> terminated)
# success payload: {"requestId", "sagaId", "services": [{"id", "state"}]}  (those it terminated)
TERMINATE_SERVICES = CommandKind(
    "TerminateServices", INVENTORY_COMMANDS.name, "ServicesTerminated", "ServiceTerminationFailed"
)

REPAIR_COMMANDS = (RECLAIM_RESOURCES, TERMINATE_SERVICES)


def failure(error: str, *, permanent: bool) -> dict[str, Any]:
    """The body of a failure reply."""
    return {"error": error, "permanent": permanent}
