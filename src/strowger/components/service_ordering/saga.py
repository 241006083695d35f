"""The fulfilment saga: ALLOCATE → ACTIVATE → RECORD_INVENTORY, per ``components/contract.py``.

The saga id is the service order id. Its data (built once, by
:func:`fulfilment_data`, when the service order is created) holds everything
the command builders need, so a builder is a pure function of the saga's data
and the earlier steps' results:

* ``allocate`` sends ``AllocateResources`` (the plan's pooled resources) and is
  undone by ``ReleaseResources`` naming the allocation's request id;
* ``activate`` sends ``ActivateService`` with the activation steps and the
  allocations ROM replied with, undone by ``DeactivateService``;
* ``recordInventory`` sends ``RecordInventory`` (services active, or terminated
  for a ``delete``; resources with their allocated values), undone by
  ``RemoveInventory``.

Semantic locks are the products the order changes (``product:<id>``) and the
services it names (``service:<id>``), so two orders never change the same
service at once: the second one queues until the first ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from strowger.components import contract
from strowger.components.contract import CommandKind
from strowger.components.decomposition import FulfilmentPlan, ServicePlan
from strowger.components.ordering.states import OrderItemAction
from strowger.saga import Call, Command, RetryPolicy, SagaDefinition, Step, StepContext

SAGA_TYPE = "serviceOrderFulfilment"
ALLOCATE = "allocate"
ACTIVATE = "activate"
RECORD_INVENTORY = "recordInventory"

Data = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FulfilmentTimings:
    """How long each command is awaited and how often it is sent (``FulfilmentSettings`` builds one
    from ``STROWGER_FULFILMENT_*``; these defaults are the same)."""

    timeout: timedelta = timedelta(seconds=30)
    action_retry: RetryPolicy = field(
        # Non-permanent refusals are retried too: a busy network element may answer next time.
        default_factory=lambda: RetryPolicy(max_attempts=3, backoff=timedelta(seconds=2), retry_refusals=True)
    )
    compensation_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=5, backoff=timedelta(seconds=2))
    )


# -- saga data --------------------------------------------------------------------------------------


def service_id(product_id: str, plan: ServicePlan) -> str:
    """A service's id: stable per product and specification, so a later modify/delete finds it."""
    return f"{product_id}-{plan.spec_id}"


def product_id_of(order_id: str, item: Data) -> str:
    """The product an item changes: ``item.product.id`` if given, else ``<order id>-<item id>`` (as COM)."""
    product = item.get("product") or {}
    return str(product.get("id") or f"{order_id}-{item['id']}")


def fulfilment_data(
    service_order_id: str,
    product_order: Data,
    plans: Sequence[FulfilmentPlan],
) -> dict[str, Any]:
    """Everything the saga's commands carry, computed once from the product order and its plans."""
    order_id = str(product_order["id"])
    items = {str(item["id"]): item for item in product_order.get("productOrderItem", ())}
    services: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    products: list[str] = []
    for plan in plans:
        product_id = product_id_of(order_id, items.get(plan.order_item_id, {"id": plan.order_item_id}))
        products.append(product_id)
        for service in plan.services:
            services.append(
                {
                    "id": service_id(product_id, service),
                    "ref": service.ref,
                    "name": service.name,
                    "specId": service.spec_id,
                    "kind": service.kind.value,
                    "action": service.action.value,
                    "orderItemId": plan.order_item_id,
                    "characteristics": [{"name": n, "value": v} for n, v in service.characteristics],
                }
            )
            if service.action is OrderItemAction.ADD:  # modify keeps, delete frees what exists
                resources.extend(
                    {
                        "ref": resource.ref,
                        "specId": resource.spec_id,
                        "name": resource.name,
                        "poolType": resource.pool_type,
                        "poolScope": resource.pool_scope,
                    }
                    for resource in service.resources
                    if resource.pool_type is not None
                )
        # Targets stay the plan's refs: the allocations ROM returns are keyed by the same refs.
        steps.extend(
            {"operation": step.operation.value, "target": step.target, "specId": step.spec_id}
            for step in plan.steps
        )
    return {
        "serviceOrderId": service_order_id,
        "productOrderId": order_id,
        "orderType": order_type(product_order),
        "customerId": customer_of(product_order),
        "products": list(dict.fromkeys(products)),
        "services": services,
        "resources": resources,
        "steps": steps,
    }


def order_type(order: Data) -> str:
    """The order's item actions, e.g. ``add`` or ``add+delete`` (saga duration metrics are per order type)."""
    actions = {
        str(item.get("action", "")) for item in order.get("productOrderItem", ()) if isinstance(item, Mapping)
    }
    return "+".join(sorted(action for action in actions if action)) or "none"


def customer_of(order: Data) -> str:
    for party in order.get("relatedParty") or ():
        if isinstance(party, Mapping) and str(party.get("role", "")).lower() == "customer":
            return str(party.get("id", ""))
    return ""


def lock_keys(data: Data) -> list[str]:
    products = [f"product:{product}" for product in data.get("products", ())]
    services = [f"service:{service['id']}" for service in data.get("services", ())]
    return [*products, *services]


# -- command builders -------------------------------------------------------------------------------


def _request_id(context: StepContext, step: str, role: str = "action") -> str:
    """The request id the engine gives another call of this saga (``<saga>/<step>/<role>``)."""
    return f"{context.saga_id}/{step}/{role}"


def _command(kind: CommandKind, context: StepContext, **body: Any) -> Command:
    payload = {"requestId": context.request_id, "serviceOrderId": context.data["serviceOrderId"], **body}
    return Command(kind.topic, kind.name, payload)


def allocate(context: StepContext) -> Command:
    data = context.data
    return _command(
        contract.ALLOCATE_RESOURCES,
        context,
        productOrderId=data["productOrderId"],
        resources=list(data["resources"]),
    )


def release(context: StepContext) -> Command:
    return _command(contract.RELEASE_RESOURCES, context, allocationRequestId=_request_id(context, ALLOCATE))


def allocations(context: StepContext) -> list[Any]:
    return list(context.results.get(ALLOCATE, {}).get("allocations") or ())


def activate(context: StepContext) -> Command:
    data = context.data
    return _command(
        contract.ACTIVATE_SERVICE,
        context,
        productOrderId=data["productOrderId"],
        steps=list(data["steps"]),
        allocations=allocations(context),
    )


def deactivate(context: StepContext) -> Command:
    return _command(contract.DEACTIVATE_SERVICE, context, activationRequestId=_request_id(context, ACTIVATE))


def record_inventory(context: StepContext) -> Command:
    data = context.data
    by_ref = {resource["ref"]: resource for resource in data["resources"]}
    services = [
        {
            "id": service["id"],
            "name": service["name"],
            "specId": service["specId"],
            "state": "terminated" if service["action"] == OrderItemAction.DELETE.value else "active",
        }
        for service in data["services"]
        if service["action"] != OrderItemAction.NO_CHANGE.value
    ]
    resources = []
    for allocation in allocations(context):
        planned = by_ref.get(allocation.get("ref"), {})
        resources.append(
            {
                "id": str(allocation.get("id") or f"{allocation.get('pool')}/{allocation.get('value')}"),
                "name": planned.get("name", allocation.get("ref")),
                "specId": planned.get("specId", ""),
                "value": allocation.get("value"),
            }
        )
    return _command(
        contract.RECORD_INVENTORY,
        context,
        productOrderId=data["productOrderId"],
        customerId=data["customerId"],
        services=services,
        resources=resources,
    )


def remove_inventory(context: StepContext) -> Command:
    return _command(
        contract.REMOVE_INVENTORY, context, recordRequestId=_request_id(context, RECORD_INVENTORY)
    )


# -- the definition ---------------------------------------------------------------------------------


def _call(kind: CommandKind, build: Any, timings: FulfilmentTimings, retry: RetryPolicy) -> Call:
    return Call(build, succeeded=kind.succeeded, failed=kind.failed, timeout=timings.timeout, retry=retry)


def fulfilment_saga(timings: FulfilmentTimings | None = None) -> SagaDefinition:
    """The SagaDefinition SOM runs for each service order."""
    timings = timings or FulfilmentTimings()
    act, undo = timings.action_retry, timings.compensation_retry
    return SagaDefinition(
        SAGA_TYPE,
        steps=(
            Step(
                ALLOCATE,
                _call(contract.ALLOCATE_RESOURCES, allocate, timings, act),
                _call(contract.RELEASE_RESOURCES, release, timings, undo),
            ),
            Step(
                ACTIVATE,
                _call(contract.ACTIVATE_SERVICE, activate, timings, act),
                _call(contract.DEACTIVATE_SERVICE, deactivate, timings, undo),
            ),
            Step(
                RECORD_INVENTORY,
                _call(contract.RECORD_INVENTORY, record_inventory, timings, act),
                _call(contract.REMOVE_INVENTORY, remove_inventory, timings, undo),
            ),
        ),
        lock_keys=lock_keys,
    )


REPLY_TYPES = frozenset(reply for kind in contract.ALL_COMMANDS for reply in (kind.succeeded, kind.failed))
