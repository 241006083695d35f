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
  created by the supervisor, which also serve the admin's cross-component checks (chaos), and
  each component's outbox backlog through ``outbox_backlog`` (counts only, no payload). It
  replays and discards dead letters in their owner's ``parked`` (:func:`parked_homes`), whose
  ids come from a range of their own per component (:func:`parked_id_range`), so an id names
  one letter in the whole cluster.
* The product inventory is written by the inventory component itself, from the ordering
  events (``inventory-products`` consumer): no write grant crosses components. TMF637
  ``?asOf=`` replays the inventory's own product history, so no read of ordering's event store
  or views crosses either (docs/operations.md says why no crossing was chosen).
* **Reconciliation** (operations) only reads across (SOM's ``sagas``, ROM's
  ``resource_pool_slot``, the inventory's ``service_state`` view) and repairs by commands
  through its outbox (``ReclaimResources`` to ROM, ``TerminateServices`` to the inventory),
  which each owner applies in its own transaction: no write grant crosses components.

``strowger run all`` and a single-process deployment keep one schema: nothing here applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strowger.components.registry import ALL, COMPONENTS, owner_of

if TYPE_CHECKING:
    from strowger.settings import Settings

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
# A directory view made for operations: per component, its unpublished outbox rows and the oldest
# one's created_at (the sampler's backlog gauge, the dashboard); counts, never the events. Not
# named ``outbox``: operations has an outbox of its own, for its alert events.
OUTBOX_BACKLOG = "outbox_backlog"
# What operations may do on the dead letters of every component that runs consumer groups:
# read them, replay (UPDATE to retrying) and discard (DELETE, promote the next of the entity).
OPERATIONS_DEAD_LETTER_GRANTS: tuple[tuple[str, str], ...] = (("parked", "SELECT, UPDATE, DELETE"),)
# Each component's parked ids come from a block of this size of its own (registry order), so an
# id seen in the directory's union names one dead letter of one component.
PARKED_ID_BLOCK = 1 << 40


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
        "service-ordering",
        (OPERATIONS,),
        ("sagas", "saga_steps", "saga_log"),
        "SELECT",
        "the dashboard's saga panels and the saga gauges and alerts of operations' sampler; "
        "reconciliation compares the sagas' outcomes with pools and the service inventory",
    ),
    Crossing(
        "resource-ordering",
        (OPERATIONS,),
        ("resource_pool_slot",),
        "SELECT",
        "reconciliation finds pool values still held for sagas that ended without completing",
    ),
    Crossing(
        "inventory",
        (OPERATIONS,),
        ("service_state",),  # a view of the TMF638 services' ids and states only
        "SELECT",
        "reconciliation finds services left active for failed or cancelled orders",
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
        views = (*DIRECTORY_VIEWS_FOR_OPERATIONS, OUTBOX_BACKLOG)
        borrowed += [Borrowed(table, schemas[DIRECTORY]) for table in views]
    return borrowed


def borrowed_names(component: str, schemas: Mapping[str, str]) -> frozenset[str]:
    """The names ``component``'s process must not create (they are views onto another schema)."""
    return frozenset(item.name for item in borrowed_by(component, schemas))


def component_schemas(schemas: Mapping[str, str]) -> dict[str, str]:
    """Every component's schema (the directory left out): what the relay relays."""
    return {name: schema for name, schema in schemas.items() if name != DIRECTORY}


def split_schemas(settings: Settings) -> Mapping[str, str] | None:
    """Every component's schema when this process is one component of a split cluster, else None."""
    split = settings.database == "postgresql" and settings.component != ALL
    return settings.database_schemas if split and settings.database_schemas else None


def operations_across_components(settings: Settings) -> bool:
    """Whether this process is operations in a split cluster: it reads every component's outbox
    backlog through the directory (``outbox_backlog``), not its own outbox."""
    return settings.component == OPERATIONS and split_schemas(settings) is not None


def parks_dead_letters(component: str) -> bool:
    """Whether ``component`` runs consumer groups, so has dead letters operations may repair."""
    return any(c.name == component and c.consumers for c in COMPONENTS)


def parked_id_range(component: str) -> tuple[int, int]:
    """The first and last id of ``component``'s dead letters in a split cluster."""
    index = next(i for i, c in enumerate(COMPONENTS, start=1) if c.name == component)
    return index * PARKED_ID_BLOCK, (index + 1) * PARKED_ID_BLOCK - 1


def parked_homes(schemas: Mapping[str, str]) -> Callable[[str], str | None]:
    """Where a consumer group's dead letters live (its owner's ``"schema".parked``), or None."""

    def home_of(consumer: str) -> str | None:
        # A webhook delivery queue (``hub-delivery/<api>/<subscription>``) is hub-delivery's.
        group = consumer.partition("/")[0]
        try:
            owner = owner_of(group).name
        except KeyError:
            return None
        return f'"{schemas[owner]}".parked' if owner in schemas else None

    return home_of
