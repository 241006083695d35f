"""The component catalogue: what each deployable unit of Strowger runs and owns.

``strowger run <component>`` starts one process per component; Kubernetes runs
one Deployment per component (deploy/kubernetes/). Each entry says what the
process serves (TMF API base paths), which consumer groups and background
tasks it runs, and the PostgreSQL schema and role it owns. A consumer group or
a task belongs to exactly one component, so scaling a Deployment adds members
to its groups and never starts a second copy of another component's work.

Every process, whatever its component, serves ``/health``, ``/ready`` and
``/metrics`` (the probes and the scrape), so ``http_apis`` lists only the
business APIs.

``parse_component("all")`` is the whole platform in one process (the embedded
default): the union of every component.
"""

from __future__ import annotations

from dataclasses import dataclass

from strowger.errors import ConfigError

ALL = "all"
SETTING = "STROWGER_COMPONENT"


@dataclass(frozen=True, slots=True)
class Component:
    """One deployable unit: a ``strowger run <name>`` process, a Kubernetes Deployment."""

    name: str
    summary: str
    http_apis: tuple[str, ...] = ()  # base paths of the business APIs it serves
    consumers: tuple[str, ...] = ()  # consumer groups (Consumer.name) it runs
    tasks: tuple[str, ...] = ()  # background tasks (Platform.add_task names) besides its consumers
    schema: str = "strowger"  # the PostgreSQL schema holding its tables
    role: str = "strowger"  # the PostgreSQL role it connects as (owner of ``schema``)
    # Parts listed above that the code base does not provide yet: catalogued so the deployment,
    # the docs and the topic plan are ready, but a process started today does not run them.
    planned: tuple[str, ...] = ()

    @property
    def serves_http(self) -> bool:
        """Whether it serves business APIs (probes and /metrics are always served)."""
        return bool(self.http_apis)

    @property
    def available(self) -> bool:
        """Whether it runs anything today (at least one of its parts is not planned)."""
        return any(part not in self.planned for part in self.parts)

    @property
    def parts(self) -> tuple[str, ...]:
        """Its API base paths, consumer groups and tasks."""
        return (*self.http_apis, *self.consumers, *self.tasks)

    def runs(self, part: str) -> bool:
        """Whether ``part`` (an API base path, a consumer group or a task name) runs in this component."""
        return part in self.http_apis or part in self.consumers or part in self.tasks


COMPONENTS: tuple[Component, ...] = (
    Component(
        "catalog",
        "TMF620 Product Catalog; seeds the sample catalog when STROWGER_SAMPLE_CATALOG is set",
        http_apis=("/tmf-api/productCatalogManagement/v4",),
        schema="catalog",
        role="strowger_catalog",
    ),
    Component(
        "ordering",
        "COM: TMF622 Product Ordering (event-sourced), order validation and completion, order read models",
        http_apis=("/tmf-api/productOrderingManagement/v4",),
        consumers=("ordering-validation", "ordering-fulfilment"),
        tasks=("projection:order_list", "projection:customer_products", "projection:saga_overview"),
        schema="ordering",
        role="strowger_ordering",
    ),
    Component(
        "service-ordering",
        "SOM: TMF641 Service Ordering; its fulfilment saga commands resources, activation, inventory",
        http_apis=("/tmf-api/serviceOrdering/v4", "/sagas"),
        consumers=("service-ordering", "service-ordering-replies"),
        tasks=("service-ordering:saga-scheduler",),
        schema="service_ordering",
        role="strowger_service_ordering",
    ),
    Component(
        "resource-ordering",
        "ROM: TMF652 Resource Ordering, resource pools; executes AllocateResources/ReleaseResources",
        http_apis=("/tmf-api/resourceOrdering/v4",),
        consumers=("rom",),
        schema="resource_ordering",
        role="strowger_resource_ordering",
    ),
    Component(
        "activation",
        "Network activation: executes ActivateService/DeactivateService commands",
        http_apis=("/activation",),
        consumers=("activation",),
        tasks=("activation:scheduler",),
        schema="activation",
        role="strowger_activation",
    ),
    Component(
        "inventory",
        "TMF637/638/639 Product, Service and Resource Inventory; executes RecordInventory/RemoveInventory",
        http_apis=(
            "/tmf-api/productInventory/v4",
            "/tmf-api/serviceInventory/v4",
            "/tmf-api/resourceInventoryManagement/v4",
        ),
        consumers=("inventory-commands", "inventory-products"),  # products: from the ordering events
        schema="inventory",
        role="strowger_inventory",
    ),
    Component(
        "billing",
        "TMF678 Customer Bill; rates completed orders",
        http_apis=("/tmf-api/customerBillManagement/v4",),
        consumers=("billing",),
        schema="billing",
        role="strowger_billing",
    ),
    Component(
        "notification",
        "TMF688 Event API (topics, hubs) and customer notifications",
        http_apis=("/tmf-api/event/v4",),
        consumers=("notification",),
        tasks=("notification-sender",),
        schema="notification",
        role="strowger_notification",
    ),
    Component(
        "analytics",
        "Order and fulfilment analytics read models fed from the domain topics",
        http_apis=("/analytics",),
        consumers=("analytics",),
        schema="analytics",
        role="strowger_analytics",
    ),
    Component(
        "hub-delivery",
        "TMF630 hub webhooks: fans events out to subscribers and delivers them (signed, retried)",
        consumers=("hub-delivery",),
        tasks=("hub-delivery:worker",),
        schema="hub_delivery",
        role="strowger_hub_delivery",
    ),
    Component(
        "relay",
        "The transactional outbox relay: publishes committed outbox rows to the bus, purges old ones",
        tasks=("outbox-relay",),
        schema="strowger",
        role="strowger_relay",
    ),
    Component(
        "operations",
        "Dead letters, schema registry, AsyncAPI, order trace timeline, alerts",
        http_apis=("/dlq", "/schema-registry", "/asyncapi.json", "/trace", "/dashboard"),
        tasks=("alert-monitor", "reconciliation"),
        schema="operations",
        role="strowger_operations",
    ),
)

_BY_NAME = {component.name: component for component in COMPONENTS}


def _everything() -> Component:
    """The whole platform in one process (``strowger run all``)."""
    return Component(
        ALL,
        "every component in one process (the embedded default)",
        http_apis=tuple(api for component in COMPONENTS for api in component.http_apis),
        consumers=tuple(group for component in COMPONENTS for group in component.consumers),
        tasks=tuple(task for component in COMPONENTS for task in component.tasks),
        planned=tuple(part for component in COMPONENTS for part in component.planned),
    )


def component_names() -> tuple[str, ...]:
    """Every name ``parse_component`` accepts, ``all`` first."""
    return (ALL, *(component.name for component in COMPONENTS))


def parse_component(name: str) -> Component:
    """The component called ``name`` (``all`` for the whole platform), or ConfigError naming the choices."""
    if name == ALL:
        return _everything()
    component = _BY_NAME.get(name)
    if component is None:
        raise ConfigError(SETTING, "one of: " + ", ".join(component_names()), name)
    return component


def owner_of(part: str) -> Component:
    """The component that runs ``part`` (API base path, consumer group or task), or KeyError."""
    for component in COMPONENTS:
        if component.runs(part):
            return component
    raise KeyError(part)
