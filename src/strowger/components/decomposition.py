"""Catalog-driven decomposition of a product order item into a fulfilment plan, pure.

Nothing here knows a product: the chain is read from catalog data.

* TMF620 ``productOffering.productSpecification`` → ``productSpecification``;
  a bundle offering (``isBundle``) lists its components in ``bundledProductOffering``;
* ``productSpecification.serviceSpecification`` → customer-facing services (CFS);
* TMF633 ``serviceSpecification.serviceSpecRelationship`` (``relationshipType``
  ``dependency``) → the services it needs first, usually resource-facing (RFS);
* ``serviceSpecification.resourceSpecification`` → TMF634 resource specifications,
  whose ``poolType`` characteristic names the ROM pool to allocate from (``ipv4``,
  ``vlan``, ``olt-port``, ``msisdn``, ``imsi``, ``cpe``...), ``poolScope`` fixes
  the pool's scope and ``poolScopeFrom`` takes it from a product characteristic
  (e.g. the OLT serving the premises). A resource without ``poolType`` is
  configuration only (an APN profile): nothing to allocate.

Services come out in dependency order (what a service needs comes before it);
the activation steps are that order for ``add`` and ``modify`` and the reverse
for ``delete`` (dependents are deactivated before what they depend on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from strowger.components.ordering.states import OrderItemAction
from strowger.errors import PermanentError

Document = Mapping[str, Any]

WITHDRAWN = frozenset({"Retired", "Obsolete"})


class UnknownOffering(PermanentError):
    """The order item names a product offering the catalog does not have."""


class OfferingNotOrderable(PermanentError):
    """The offering exists but can no longer be sold (retired or obsolete)."""


class InvalidCharacteristic(PermanentError):
    """A product characteristic value is not one the catalog allows for that offering."""


class InvalidCatalog(PermanentError):
    """The catalog refers to a specification it does not define, or its services depend on each other."""


class ServiceKind(StrEnum):
    CFS = "CFS"
    RFS = "RFS"


class Operation(StrEnum):
    """What an activation step does to its target."""

    ALLOCATE = "allocate"
    ACTIVATE = "activate"
    MODIFY = "modify"
    DEACTIVATE = "deactivate"
    RELEASE = "release"


@dataclass(frozen=True)
class ResourcePlan:
    """One resource a service needs; ``pool_type`` None means configuration only."""

    ref: str
    spec_id: str
    name: str
    pool_type: str | None
    pool_scope: str | None = None


@dataclass(frozen=True)
class ServicePlan:
    """One service to act on for an order item, with the services it depends on (by ``ref``)."""

    ref: str
    spec_id: str
    name: str
    kind: ServiceKind
    action: OrderItemAction
    order_item_id: str
    offering_id: str
    depends_on: tuple[str, ...] = ()
    resources: tuple[ResourcePlan, ...] = ()
    characteristics: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ActivationStep:
    operation: Operation
    target: str  # a ServicePlan.ref or ResourcePlan.ref
    spec_id: str


@dataclass(frozen=True)
class FulfilmentPlan:
    """What fulfilling one product order item (and, for a bundle, its components) takes."""

    order_item_id: str
    offering_id: str
    action: OrderItemAction
    services: tuple[ServicePlan, ...] = ()
    steps: tuple[ActivationStep, ...] = ()

    @property
    def resources(self) -> tuple[ResourcePlan, ...]:
        return tuple(resource for service in self.services for resource in service.resources)

    def service(self, spec_id: str) -> ServicePlan:
        """The first service of ``spec_id`` (KeyError if none)."""
        for service in self.services:
            if service.spec_id == spec_id:
                return service
        raise KeyError(spec_id)


@dataclass(frozen=True)
class Catalog:
    """The catalog documents decomposition reads, indexed by id."""

    offerings: Mapping[str, Document]
    product_specifications: Mapping[str, Document]
    service_specifications: Mapping[str, Document]
    resource_specifications: Mapping[str, Document]
    prices: Mapping[str, Document] = field(default_factory=dict)
    pools: Sequence[Document] = ()

    @classmethod
    def from_documents(cls, documents: Mapping[str, Iterable[Document]]) -> Catalog:
        """From collections named like the TMF resources (``productOffering``, ``serviceSpecification``)."""

        def index(name: str) -> dict[str, Document]:
            return {str(document["id"]): document for document in documents.get(name, ())}

        return cls(
            offerings=index("productOffering"),
            product_specifications=index("productSpecification"),
            service_specifications=index("serviceSpecification"),
            resource_specifications=index("resourceSpecification"),
            prices=index("productOfferingPrice"),
            pools=list(documents.get("resourcePool", ())),
        )

    def offering(self, offering_id: str) -> Document:
        try:
            return self.offerings[offering_id]
        except KeyError:
            raise UnknownOffering(f"product offering {offering_id!r} is not in the catalog") from None

    def _get(self, collection: Mapping[str, Document], kind: str, spec_id: str, user: str) -> Document:
        try:
            return collection[spec_id]
        except KeyError:
            raise InvalidCatalog(
                f"{user} refers to {kind} {spec_id!r}, which the catalog does not define"
            ) from None

    def product_specification(self, spec_id: str, user: str) -> Document:
        return self._get(self.product_specifications, "productSpecification", spec_id, user)

    def service_specification(self, spec_id: str, user: str) -> Document:
        return self._get(self.service_specifications, "serviceSpecification", spec_id, user)

    def resource_specification(self, spec_id: str, user: str) -> Document:
        return self._get(self.resource_specifications, "resourceSpecification", spec_id, user)


def decompose(item: Document, catalog: Catalog) -> FulfilmentPlan:
    """The fulfilment plan of one TMF622 ``productOrderItem`` (a dict as the API receives it).

    Raises :class:`UnknownOffering`, :class:`OfferingNotOrderable`,
    :class:`InvalidCharacteristic` or :class:`InvalidCatalog`, all permanent.
    """
    item_id = str(item.get("id", ""))
    action = OrderItemAction(item.get("action", OrderItemAction.ADD))
    offering_id = _offering_id(item)
    offering = catalog.offering(offering_id)
    if action is OrderItemAction.ADD and offering.get("lifecycleStatus") in WITHDRAWN:
        raise OfferingNotOrderable(
            f"product offering {offering_id!r} is {offering['lifecycleStatus']} and cannot be ordered"
        )
    if offering.get("isBundle"):
        parts = [decompose(component, catalog) for component in _components(item, offering, action, catalog)]
        services = tuple(service for part in parts for service in part.services)
        steps = tuple(step for part in parts for step in part.steps)
        return FulfilmentPlan(item_id, offering_id, action, services, steps)
    characteristics = _characteristics(item, offering, catalog, action)
    services = _services(item_id, offering_id, action, offering, characteristics, catalog)
    return FulfilmentPlan(item_id, offering_id, action, services, _steps(action, services))


def _offering_id(item: Document) -> str:
    offering = item.get("productOffering") or {}
    if not offering.get("id"):
        raise UnknownOffering(f"product order item {item.get('id')!r} names no productOffering id")
    return str(offering["id"])


def _components(
    item: Document, offering: Document, action: OrderItemAction, catalog: Catalog
) -> list[Document]:
    """A bundle's component items: those the order gives, else one per bundled offering of the catalog.

    Synthesised components get the bundle's action and the characteristics each one declares.
    """
    given = item.get("productOrderItem")
    if given:
        return list(given)
    characteristics = (item.get("product") or {}).get("productCharacteristic", ())
    components: list[Document] = []
    for number, bundled in enumerate(offering.get("bundledProductOffering", ()), start=1):
        component = catalog.offering(str(bundled["id"]))
        spec = _product_spec(component, catalog)
        declared = {char["name"] for char in spec.get("productSpecCharacteristic", ())}
        components.append(
            {
                "id": f"{item.get('id', '')}.{number}",
                "action": action.value,
                "productOffering": {"id": component["id"]},
                "product": {"productCharacteristic": [c for c in characteristics if c["name"] in declared]},
            }
        )
    return components


# -- characteristics --------------------------------------------------------------------------


def _characteristics(
    item: Document, offering: Document, catalog: Catalog, action: OrderItemAction
) -> dict[str, Any]:
    """The product's characteristics: catalog defaults, offering restrictions, then the order's values."""
    spec = _product_spec(offering, catalog)
    declared = {char["name"]: char for char in spec.get("productSpecCharacteristic", ())}
    restricted = {use["name"]: use for use in offering.get("prodSpecCharValueUse", ())}
    values: dict[str, Any] = {}
    for name, char in declared.items():
        default = _default(restricted.get(name, char).get("productSpecCharacteristicValue", ()))
        if default is not None:
            values[name] = default
    ordered = {
        char["name"]: char.get("value")
        for char in (item.get("product") or {}).get("productCharacteristic", ())
    }
    if action in (OrderItemAction.ADD, OrderItemAction.MODIFY):
        for name, value in ordered.items():
            _check_allowed(offering, declared, restricted, name, value)
    return values | ordered


def _default(allowed: Iterable[Document]) -> Any:
    for value in allowed:
        if value.get("isDefault"):
            return value.get("value")
    return None


def _check_allowed(
    offering: Document,
    declared: Mapping[str, Document],
    restricted: Mapping[str, Document],
    name: str,
    value: Any,
) -> None:
    if name not in declared:
        raise InvalidCharacteristic(f"product offering {offering['id']!r} has no characteristic {name!r}")
    source = restricted.get(name, declared[name])
    allowed = [entry.get("value") for entry in source.get("productSpecCharacteristicValue", ())]
    if allowed and value not in allowed:
        shown = ", ".join(repr(entry) for entry in allowed)
        raise InvalidCharacteristic(
            f"{name}={value!r} is not allowed for product offering {offering['id']!r} (allowed: {shown})"
        )


def _product_spec(offering: Document, catalog: Catalog) -> Document:
    reference = offering.get("productSpecification")
    if not reference:
        raise InvalidCatalog(f"product offering {offering['id']!r} has no productSpecification")
    return catalog.product_specification(str(reference["id"]), f"product offering {offering['id']!r}")


# -- services, in dependency order ------------------------------------------------------------


def _services(
    item_id: str,
    offering_id: str,
    action: OrderItemAction,
    offering: Document,
    characteristics: Mapping[str, Any],
    catalog: Catalog,
) -> tuple[ServicePlan, ...]:
    product_spec = _product_spec(offering, catalog)
    ordered: list[str] = []
    visiting: list[str] = []

    def visit(spec_id: str, user: str) -> None:
        if spec_id in ordered:
            return  # shared by two services: fulfilled once
        if spec_id in visiting:
            cycle = " → ".join([*visiting[visiting.index(spec_id) :], spec_id])
            raise InvalidCatalog(f"service specifications depend on each other in a cycle: {cycle}")
        spec = catalog.service_specification(spec_id, user)
        visiting.append(spec_id)
        for dependency in _dependencies(spec):
            visit(dependency, f"service specification {spec_id!r}")
        visiting.pop()
        ordered.append(spec_id)

    for reference in product_spec.get("serviceSpecification", ()):
        visit(str(reference["id"]), f"product specification {product_spec['id']!r}")

    def ref(spec_id: str) -> str:
        return f"{item_id}/{spec_id}"

    plans = []
    for spec_id in ordered:
        spec = catalog.service_specifications[spec_id]
        plans.append(
            ServicePlan(
                ref=ref(spec_id),
                spec_id=spec_id,
                name=str(spec.get("name", spec_id)),
                kind=_kind(spec),
                action=action,
                order_item_id=item_id,
                offering_id=offering_id,
                depends_on=tuple(ref(dependency) for dependency in _dependencies(spec)),
                resources=_resources(ref(spec_id), spec, characteristics, catalog),
                characteristics=_service_characteristics(spec, characteristics),
            )
        )
    return tuple(plans)


def _dependencies(spec: Document) -> list[str]:
    return [
        str(relation["id"])
        for relation in spec.get("serviceSpecRelationship", ())
        if relation.get("relationshipType", "dependency") == "dependency"
    ]


def _kind(spec: Document) -> ServiceKind:
    schema = (spec.get("targetServiceSchema") or {}).get("@type")
    if schema in (ServiceKind.CFS, ServiceKind.RFS):
        return ServiceKind(schema)
    return ServiceKind.RFS if spec.get("@type") == "ResourceFacingServiceSpecification" else ServiceKind.CFS


def _service_characteristics(spec: Document, product: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The product characteristics this service declares (same name), passed down unchanged."""
    names = [char["name"] for char in spec.get("specCharacteristic", ())]
    return tuple((name, product[name]) for name in names if name in product)


def _resources(
    service_ref: str, spec: Document, product: Mapping[str, Any], catalog: Catalog
) -> tuple[ResourcePlan, ...]:
    plans = []
    for reference in spec.get("resourceSpecification", ()):
        resource = catalog.resource_specification(
            str(reference["id"]), f"service specification {spec['id']!r}"
        )
        fixed = _fixed_values(resource)
        scope_from = fixed.get("poolScopeFrom")
        scope = fixed.get("poolScope")
        if scope is None and scope_from is not None and scope_from in product:
            scope = str(product[scope_from])
        plans.append(
            ResourcePlan(
                ref=f"{service_ref}/{resource['id']}",
                spec_id=str(resource["id"]),
                name=str(resource.get("name", resource["id"])),
                pool_type=fixed.get("poolType"),
                pool_scope=scope,
            )
        )
    return tuple(plans)


def _fixed_values(resource: Document) -> dict[str, str]:
    """The default value of each resource characteristic (``poolType``, ``poolScope``...)."""
    values = {}
    for char in resource.get("resourceSpecCharacteristic", ()):
        default = _default(char.get("resourceSpecCharacteristicValue", ()))
        if default is not None:
            values[str(char["name"])] = str(default)
    return values


# -- activation steps -------------------------------------------------------------------------


def _steps(action: OrderItemAction, services: Sequence[ServicePlan]) -> tuple[ActivationStep, ...]:
    steps: list[ActivationStep] = []
    if action is OrderItemAction.ADD:
        for service in services:
            steps += [
                ActivationStep(Operation.ALLOCATE, r.ref, r.spec_id) for r in service.resources if r.pool_type
            ]
            steps.append(ActivationStep(Operation.ACTIVATE, service.ref, service.spec_id))
    elif action is OrderItemAction.MODIFY:
        steps = [ActivationStep(Operation.MODIFY, service.ref, service.spec_id) for service in services]
    elif action is OrderItemAction.DELETE:
        for service in reversed(services):
            steps.append(ActivationStep(Operation.DEACTIVATE, service.ref, service.spec_id))
            steps += [
                ActivationStep(Operation.RELEASE, r.ref, r.spec_id) for r in service.resources if r.pool_type
            ]
    return tuple(steps)
