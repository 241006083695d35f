"""What a cluster runs: one ``strowger run <component>`` process per component instance.

The plan is data (frozen dataclasses, JSON round trip) so the supervisor that starts the
cluster and the one that later stops it (another ``strowger cluster`` invocation) agree
on every process, port and setting.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strowger.components.registry import COMPONENTS, Component

# Components that must run exactly once: the alert monitor would raise every alert twice,
# and the catalogue seeder/API gains nothing from a second copy on one machine.
SINGLETONS = frozenset({"operations", "catalog"})
# Started alone first: it creates every table and seeds the catalog and schema registry,
# so the others start against a ready schema instead of racing on CREATE TABLE.
FIRST = "catalog"
GATEWAY = "gateway"  # the name of the entry point's process (not a component)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process of the cluster."""

    name: str  # e.g. "service-ordering-2"; also the log file name
    component: str
    instance: int
    port: int


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """Every process of one cluster and the settings they share."""

    cluster_id: str
    root: str  # directory holding the state file, logs and the shared API key
    database_url: str
    database_schema: str
    bus_url: str
    bus_namespace: str
    processes: tuple[ProcessSpec, ...]
    environment: dict[str, str] = field(default_factory=dict)  # extra STROWGER_* for every process
    component_environment: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each component in its own schema, as its own role (strowger.cluster.provision); False: every
    # process shares ``database_schema`` and the URL's role.
    split_database: bool = True
    # The HTTP entry point (strowger.cluster.gateway), its own process; None: no gateway.
    gateway: ProcessSpec | None = None

    @property
    def bus(self) -> str:
        return "rabbitmq" if self.bus_url.startswith("amqp") else "kafka"

    def process(self, name: str) -> ProcessSpec:
        for spec in self.processes:
            if spec.name == name:
                return spec
        if self.gateway is not None and self.gateway.name == name:
            return self.gateway
        raise KeyError(name)

    def instances_of(self, component: str) -> list[ProcessSpec]:
        return [spec for spec in self.processes if spec.component == component]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ClusterPlan:
        processes = tuple(ProcessSpec(**spec) for spec in document.pop("processes"))
        gateway = document.pop("gateway", None)
        return cls(processes=processes, gateway=ProcessSpec(**gateway) if gateway else None, **document)


def plan_cluster(
    root: Path,
    *,
    database_url: str,
    bus_url: str,
    instances: int = 2,
    scale: Mapping[str, int] | None = None,
    environment: dict[str, str] | None = None,
    component_environment: dict[str, dict[str, str]] | None = None,
) -> ClusterPlan:
    """A plan with a fresh schema and bus namespace, and ``instances`` of every scalable component.

    ``scale`` overrides the count per component (e.g. ``{"service-ordering": 2}`` on top of
    ``instances=1``: a consumer group with two members where a scenario needs one, without
    paying the start-up of a second copy of everything else). Singletons stay single.
    """
    unknown = sorted(set(scale or {}) - {component.name for component in _runnable()})
    if unknown:
        raise ValueError(f"no such component to scale: {', '.join(unknown)}")
    cluster_id = secrets.token_hex(4)
    processes = []
    for component in _runnable():
        wanted = (scale or {}).get(component.name, instances)
        count = 1 if component.name in SINGLETONS else max(1, wanted)
        for instance in range(1, count + 1):
            name = component.name if count == 1 else f"{component.name}-{instance}"
            processes.append(ProcessSpec(name, component.name, instance, free_port()))
    return ClusterPlan(
        cluster_id=cluster_id,
        root=str(root.resolve()),
        database_url=database_url,
        database_schema=f"cluster_{cluster_id}",
        bus_url=bus_url,
        bus_namespace=f"cluster-{cluster_id}",
        processes=tuple(processes),
        environment=dict(environment or {}),
        component_environment=_component_defaults(component_environment or {}),
        gateway=ProcessSpec(GATEWAY, GATEWAY, 1, free_port()),
    )


DEPLOYMENT_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,29}")


def deployment_plan(database_url: str, prefix: str) -> ClusterPlan:
    """The database side of a deployment whose processes something else runs (Kubernetes).

    One instance of every component is listed only so that :mod:`strowger.cluster.provision`
    knows the components: schemas are ``<prefix>_<schema>``, roles ``<prefix>_<role>`` and the
    directory ``<prefix>`` (docs/operations.md, "Kubernetes")."""
    if not DEPLOYMENT_PREFIX.fullmatch(prefix):
        raise ValueError(f"deployment prefix {prefix!r}: a-z, 0-9 and _, a letter first, at most 30")
    processes = tuple(ProcessSpec(c.name, c.name, 1, 0) for c in _runnable())
    return ClusterPlan(
        cluster_id=prefix,
        root="",
        database_url=database_url,
        database_schema=prefix,
        bus_url="",
        bus_namespace="",
        processes=processes,
    )


def _component_defaults(overrides: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Only the catalog process seeds the sample catalog (every process would, racing, otherwise)."""
    merged: dict[str, dict[str, str]] = {}
    for component in _runnable():
        defaults = {} if component.name == FIRST else {"STROWGER_SAMPLE_CATALOG": "false"}
        merged[component.name] = {**defaults, **overrides.get(component.name, {})}
    return merged


def _runnable() -> list[Component]:
    """Every component that runs something today, the schema creator first."""
    available = [component for component in COMPONENTS if component.available]
    return sorted(available, key=lambda component: component.name != FIRST)


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
