"""Who may touch whose tables when each component has its own PostgreSQL schema and role.

In a split deployment (``strowger cluster up``; docs/operations.md, "Database layout") every
component owns one schema and connects as one role that owns that schema only. Where a
component must use another's data, this module names the crossing: the owner, the tables,
the privileges and why. Everything else stays out of reach (permission denied).

* A **borrower** is granted ``privileges`` on the owner's tables and finds each of them in its
  own schema as a view of the same name (``ordering.saga_log`` = ``SELECT * FROM
  service_ordering.saga_log``), created by the supervisor as the borrower. Its search_path is
  its own schema alone, so no name can resolve to a third component's copy, and its code does
  not know. It never creates a borrowed table itself (:class:`~strowger.store.postgres.
  PostgresDatabase` skips that DDL). Simple views are updatable: the hub subscriptions are
  written through theirs.
* The **relay** connects once per component schema and is granted exactly what relaying and
  purging need on each ``outbox`` and ``inbox``; it owns nothing it reads.
* **operations** reads the dead letters, traces and inboxes of every component through
  read-only views in the cluster's *directory* schema (one ``UNION ALL`` per table name),
  created by the supervisor, which also serve the admin's cross-component checks (chaos).
* The product inventory is written by the inventory component itself, from the ordering
  events (``inventory-products`` consumer): no write grant crosses components.

``strowger run all`` and a single-process deployment keep one schema: nothing here applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from strowger.components.registry import COMPONENTS

DIRECTORY = "directory"  # key of the cluster's directory schema (union views) in a schema mapping
RELAY = "relay"
OPERATIONS = "operations"

# The components serving a TMF /hub endpoint (toolkit APIs, TMF622, TMF641, TMF688).
HUB_WRITERS = (
    "catalog",
    "ordering",
    "service-ordering",
    "resource-ordering",
    "inventory",
    "billing",
    "notification",
)
REGISTRY_TABLES = (
    "schema_registry_schemas",
    "schema_registry_subjects",
    "schema_registry_versions",
    "schema_registry_config",
)
# What the relay may do on every component's backbone tables: read and mark outbox rows,
# purge published ones, purge old inbox rows (docs/event-backbone.md, retention).
RELAY_GRANTS: tuple[tuple[str, str], ...] = (
    ("outbox", "SELECT, UPDATE, DELETE"),
    ("inbox", "SELECT, DELETE"),
)
# Every component's tables of these names are read by operations through the directory's views.
DIRECTORY_VIEWS_FOR_OPERATIONS = ("parked", "trace_hop", "inbox")


@dataclass(frozen=True, slots=True)
class Crossing:
    """``readers`` may use ``tables`` of ``owner``'s schema with ``privileges``; ``why`` says what for."""

    owner: str
    readers: tuple[str, ...]
    tables: tuple[str, ...]
    privileges: str
    why: str


CROSSINGS: tuple[Crossing, ...] = (
    Crossing(
        "catalog",
        ("ordering", "service-ordering", "billing", "analytics"),
        ("catalog_resource",),  # a view of the TMF620 rows only, not the component's whole table
        "SELECT",
        "order validation, SOM decomposition, billing's and analytics' prices read the catalog",
    ),
    Crossing(
        "service-ordering",
        ("ordering",),
        ("saga_log", "sagas"),
        "SELECT",
        "ordering's saga_overview projection tails the fulfilment sagas' log",
    ),
    Crossing(
        "hub-delivery",
        HUB_WRITERS,
        ("tmf_hub_subscription",),
        "SELECT, INSERT, UPDATE, DELETE",
        "the /hub endpoints register subscribers in hub-delivery's registry, which fans events out",
    ),
    Crossing(
        OPERATIONS,
        tuple(c.name for c in COMPONENTS if c.name not in (OPERATIONS, RELAY)),
        REGISTRY_TABLES,
        "SELECT",
        "every process validates what it emits and consumes against the schema registry",
    ),
)


@dataclass(frozen=True, slots=True)
class Borrowed:
    """A view in the borrower's schema onto a table (or view) of another schema."""

    name: str
    source_schema: str


def borrowed_by(component: str, schemas: Mapping[str, str]) -> list[Borrowed]:
    """What ``component`` reads from other schemas, given every component's schema (and the directory)."""
    borrowed = [
        Borrowed(table, schemas[crossing.owner])
        for crossing in CROSSINGS
        if component in crossing.readers and crossing.owner in schemas
        for table in crossing.tables
    ]
    if component == OPERATIONS:
        borrowed += [Borrowed(table, schemas[DIRECTORY]) for table in DIRECTORY_VIEWS_FOR_OPERATIONS]
    return borrowed


def borrowed_names(component: str, schemas: Mapping[str, str]) -> frozenset[str]:
    """The names ``component``'s process must not create (they are views onto another schema)."""
    return frozenset(item.name for item in borrowed_by(component, schemas))


def component_schemas(schemas: Mapping[str, str]) -> dict[str, str]:
    """Every component's schema (the directory left out): what the relay relays."""
    return {name: schema for name, schema in schemas.items() if name != DIRECTORY}
