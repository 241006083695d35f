"""Generic TMF resources: a document store on the database port, the CRUD rules of TMF630, events.

A TMF API is declared, not coded: a :class:`TmfApi` lists its
:class:`ResourceType` s (name, JSON Schema, read-only fields, lifecycle,
events) and :func:`tmf_router` serves them with the TMF630 conventions. Writes
run in one database transaction that also receives the TMF events through an
:class:`EventSink`, so a resource change and its ``...CreateEvent`` commit
together (the sink is the transactional outbox in production).

Documents are stored whole as JSON: unknown attributes, ``@type``,
``@baseType`` and ``@schemaLocation`` survive every round trip (TMF's open
content model). Filtering runs in Python after a per-collection SQL prefilter;
:meth:`ResourceCollection.select` is the seam where it can move to SQL later.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Protocol

import orjson
from jsonschema import Draft4Validator, FormatChecker

from strowger.errors import ConcurrencyConflict
from strowger.events.envelope import Envelope, format_time, is_date_time, new_id, utcnow
from strowger.events.fastcheck import quick_check
from strowger.store.db import Database, Params, TableSet, Transaction
from strowger.tmf.errors import BadRequest, Conflict, ResourceNotFound
from strowger.tmf.patch import MERGE_PATCH, apply_patch, changed_fields
from strowger.tmf.query import Condition, Page, ResourceQuery, apply_query, page_of

Document = dict[str, Any]

# The TMF620 catalog's rows: what ordering validation, SOM decomposition and billing read. A view,
# so that in a cluster where each component has its own schema (docs/operations.md) those readers
# are granted SELECT on exactly the catalog, not on the catalog component's whole table.
_CATALOG_ROWS = (
    "SELECT collection, id, version, body FROM tmf_resource "
    "WHERE collection LIKE 'productCatalogManagement/%'"
)

# Every version of the documents of a resource type that keeps its history (``keep_history``),
# appended in the transaction that writes it; body NULL = deleted. ``recorded_at`` is UTC with
# microseconds, fixed width, so text order is time order on both databases.
_CREATED_INDEX = (
    "CREATE INDEX IF NOT EXISTS tmf_resource_created ON tmf_resource (collection, created_at, id)"
)
_HISTORY_INDEX = (
    "CREATE INDEX IF NOT EXISTS tmf_resource_history_at ON tmf_resource_history (collection, recorded_at)"
)

RESOURCE_TABLES = TableSet(
    name="tmf-resources",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS tmf_resource (
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (collection, id))""",
        _CREATED_INDEX,
        f"CREATE VIEW IF NOT EXISTS catalog_resource AS {_CATALOG_ROWS}",
        """CREATE TABLE IF NOT EXISTS tmf_resource_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            body TEXT)""",
        _HISTORY_INDEX,
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS tmf_resource (
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            body JSONB NOT NULL,
            PRIMARY KEY (collection, id))""",
        _CREATED_INDEX,
        f"CREATE OR REPLACE VIEW catalog_resource AS {_CATALOG_ROWS}",
        """CREATE TABLE IF NOT EXISTS tmf_resource_history (
            seq BIGSERIAL PRIMARY KEY,
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            body JSONB)""",
        _HISTORY_INDEX,
    ],
)


class EventSink(Protocol):
    """Where TMF events go; ``emit`` runs inside the transaction that changed the resource."""

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        """Record ``envelope`` for ``topic`` as part of ``tx`` (committed or rolled back with it)."""


class TableGuard:
    """Creates a set of tables once per database, on first use (routers are built synchronously)."""

    def __init__(self, database: Database, *table_sets: TableSet) -> None:
        self._database = database
        self._table_sets = table_sets
        self._ready = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await self._database.create_tables(*self._table_sets)
                self._ready = True


@dataclass(frozen=True, slots=True)
class Stored:
    document: Document
    version: int


def _load_body(raw: Any) -> Document:
    # PostgreSQL returns JSONB already decoded; SQLite returns the text.
    body = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(body, dict):
        raise TypeError(f"stored resource is not a JSON object: {type(body).__name__}")
    return body


class ResourceCollection:
    """The documents of one resource type, keyed by id, on the database port."""

    def __init__(self, database: Database, name: str) -> None:
        self.database = database
        self.name = name

    async def get(self, resource_id: str) -> Document | None:
        row = await self.database.fetchone(
            "SELECT body FROM tmf_resource WHERE collection = ? AND id = ?", (self.name, resource_id)
        )
        return _load_body(row[0]) if row else None

    async def select(self, query: ResourceQuery) -> Page:
        """The page of documents ``query`` asks for, in creation order unless it sorts
        (:func:`select_page`: without filter or sort the database cuts the page)."""
        return await select_page(
            self.database,
            "tmf_resource WHERE collection = ?",
            (self.name,),
            "created_at, id",
            query,
            _load_body,
        )

    async def load(self, tx: Transaction, resource_id: str) -> Stored | None:
        row = await tx.fetchone(
            "SELECT body, version FROM tmf_resource WHERE collection = ? AND id = ?",
            (self.name, resource_id),
        )
        return Stored(_load_body(row[0]), int(row[1])) if row else None

    async def add(self, tx: Transaction, document: Mapping[str, Any], created_at: datetime) -> None:
        await tx.execute(
            "INSERT INTO tmf_resource (collection, id, version, created_at, body) VALUES (?, ?, 1, ?, ?)",
            (self.name, document["id"], format_time(created_at), orjson.dumps(document).decode()),
        )

    async def replace(self, tx: Transaction, document: Mapping[str, Any], expected_version: int) -> None:
        """Store a new version; ConcurrencyConflict if another writer stored one since it was read."""
        changed = await tx.execute(
            "UPDATE tmf_resource SET body = ?, version = version + 1"
            " WHERE collection = ? AND id = ? AND version = ?",
            (orjson.dumps(document).decode(), self.name, document["id"], expected_version),
        )
        if changed != 1:
            raise ConcurrencyConflict(f"{self.name}/{document['id']} was changed concurrently")

    async def remove(self, tx: Transaction, resource_id: str) -> bool:
        changed = await tx.execute(
            "DELETE FROM tmf_resource WHERE collection = ? AND id = ?", (self.name, resource_id)
        )
        return changed == 1

    async def remember(
        self, tx: Transaction, resource_id: str, document: Mapping[str, Any] | None, at: datetime
    ) -> None:
        """Append a version of ``resource_id`` to its history (None: it was deleted at ``at``)."""
        body = None if document is None else orjson.dumps(document).decode()
        await tx.execute(
            "INSERT INTO tmf_resource_history (collection, id, recorded_at, body) VALUES (?, ?, ?, ?)",
            (self.name, resource_id, history_time(at), body),
        )

    async def all_as_of(self, moment: datetime) -> list[Document]:
        """Every document as it was at ``moment``, in creation order: its history replayed up to then."""
        rows = await self.database.fetchall(
            "SELECT id, body FROM tmf_resource_history WHERE collection = ? AND recorded_at <= ?"
            " ORDER BY seq",
            (self.name, history_time(moment)),
        )
        latest: dict[str, Any] = {}
        for resource_id, body in rows:
            latest[str(resource_id)] = body  # dicts keep the first insertion's place: creation order
        return [_load_body(body) for body in latest.values() if body is not None]

    async def get_as_of(self, resource_id: str, moment: datetime) -> Document | None:
        """``resource_id`` as it was at ``moment``; None if it did not exist then (or was deleted)."""
        row = await self.database.fetchone(
            "SELECT body FROM tmf_resource_history WHERE collection = ? AND id = ? AND recorded_at <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (self.name, resource_id, history_time(moment)),
        )
        return None if row is None or row[0] is None else _load_body(row[0])


async def select_page(
    database: Database,
    source: str,
    params: Params,
    order: str,
    query: ResourceQuery,
    load: Callable[[Any], Document],
    *,
    in_sql: Callable[[Condition], bool] = lambda condition: False,
) -> Page:
    """The page ``query`` asks for from ``SELECT body FROM {source}`` (in ``order`` unless it sorts).

    ``in_sql`` says which of ``query``'s conditions ``source`` already applies. When it applies
    every one and ``query`` does not sort, the database cuts the page (``LIMIT``/``OFFSET``, an
    index on ``order`` keeps that cheap) and counts the rows: a page reads ``limit`` bodies.
    Otherwise TMF630's filters and sorts (numbers, times, any element of an array on the path)
    run in Python over every row ``source`` returns.
    """
    if query.sort or not all(in_sql(condition) for condition in query.conditions):
        rows = await database.fetchall(f"SELECT body FROM {source} ORDER BY {order}", params)  # noqa: S608 (names of ours)
        return apply_query((load(row[0]) for row in rows), query)
    rows = await database.fetchall(
        f"SELECT body FROM {source} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608 (names of ours)
        (*params, query.limit, query.offset),
    )
    counted = await database.fetchone(f"SELECT COUNT(*) FROM {source}", params)  # noqa: S608
    return page_of((load(row[0]) for row in rows), int(counted[0]) if counted else 0, query)


def history_time(moment: datetime) -> str:
    """UTC, microseconds, fixed width: sorts as text in the order of time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Lifecycle:
    """The states of a status attribute and the moves allowed between them (others answer 409)."""

    attribute: str
    initial: str
    transitions: Mapping[str, frozenset[str]]

    @property
    def states(self) -> frozenset[str]:
        return frozenset(self.transitions) | frozenset().union(*self.transitions.values())

    def check_known(self, state: Any) -> None:
        if not isinstance(state, str) or state not in self.states:  # a list or object: not a state
            allowed = ", ".join(sorted(self.states))
            raise BadRequest(
                f"{self.attribute}: {state!r} is not a known state (one of {allowed})",
                field=self.attribute,
                code="invalidBodyField",
            )

    def check_move(self, before: Any, after: Any) -> None:
        self.check_known(after)
        if after != before and after not in self.transitions.get(before, frozenset()):
            allowed = sorted(self.transitions.get(before, frozenset()))
            hint = f"allowed next: {', '.join(allowed)}" if allowed else f"{before!r} is final"
            raise Conflict(
                f"{self.attribute} cannot change from {before!r} to {after!r} ({hint})",
                field=self.attribute,
                code="invalidStateTransition",
            )


class Operation(enum.StrEnum):
    """The TMF630 operations a resource type serves over HTTP (a spec may expose fewer)."""

    LIST = "list"
    RETRIEVE = "retrieve"
    CREATE = "create"
    PATCH = "patch"
    DELETE = "delete"


class EventKind(enum.StrEnum):
    CREATE = "Create"
    ATTRIBUTE_VALUE_CHANGE = "AttributeValueChange"
    STATE_CHANGE = "StateChange"
    DELETE = "Delete"


Validator = Callable[[Mapping[str, Any]], None]


def referenced_ids(document: Mapping[str, Any] | None, path: str, base_path: str) -> list[str]:
    """The string ids at dotted ``path`` of ``document`` (lists walked), skipping references
    whose ``href`` is not under ``base_path``: this API writes relative hrefs, so an absolute
    one names another system's resource."""
    found: list[Any] = [document] if document is not None else []
    parents: list[Any] = found
    *steps, last = path.split(".")
    for step in steps:
        parents = [item for parent in parents for item in _children(parent, step)]
    ids = []
    for parent in parents:
        if not isinstance(parent, Mapping):
            continue
        href = parent.get("href")
        if isinstance(href, str) and href and not href.startswith(base_path + "/"):
            continue  # another system's resource
        value = parent.get(last)
        if isinstance(value, str) and value:
            ids.append(value)
    return ids


def _children(parent: Any, step: str) -> list[Any]:
    value = parent.get(step) if isinstance(parent, Mapping) else None
    return list(value) if isinstance(value, list) else [value] if value is not None else []


@dataclass(frozen=True)
class ResourceType:
    """One TMF resource: its path segment, @type, validation, read-only fields, lifecycle and events."""

    name: str  # path segment and event payload key, e.g. "productOffering"
    type_name: str  # @type and event name prefix, e.g. "ProductOffering"
    validate: Validator | None = None  # raises BadRequest naming the field
    read_only: frozenset[str] = frozenset({"id", "href"})
    last_update: str | None = "lastUpdate"  # attribute the server stamps on every write
    lifecycle: Lifecycle | None = None
    events: frozenset[EventKind] = frozenset(EventKind)
    schema_name: str | None = None  # OpenAPI component describing the resource
    operations: frozenset[Operation] = frozenset(Operation)  # HTTP routes served
    keep_history: bool = False  # every version kept (tmf_resource_history): reads ``as of`` a moment
    # Attributes naming another resource of the same API, which must exist when written:
    # dotted path -> resource name ("parentId" -> "category", "productSpecification.id" ->
    # "productSpecification"); a list on the way is walked ("category.id": each entry's id).
    references: Mapping[str, str] = field(default_factory=dict)

    def event_type(self, kind: EventKind) -> str:
        return f"{self.type_name}{kind.value}Event"


@dataclass(frozen=True)
class TmfApi:
    """A TMF API served under ``base_path``: its resources, where its events go, its OpenAPI."""

    name: str  # e.g. "productCatalogManagement"
    base_path: str  # e.g. "/tmf-api/productCatalogManagement/v4"
    title: str
    version: str
    resources: Sequence[ResourceType]
    topic: str
    producer: str
    schemas: Mapping[str, Any] = field(default_factory=dict)  # OpenAPI components.schemas
    max_body_bytes: int = 1 << 20


class ResourceService:
    """The TMF630 write rules for one resource type, events emitted in the same transaction."""

    def __init__(self, api: TmfApi, resource: ResourceType, database: Database, sink: EventSink) -> None:
        self.api = api
        self.resource = resource
        self.database = database
        self.sink = sink
        self.collection = ResourceCollection(database, f"{api.name}/{resource.name}")
        self.tables = TableGuard(database, RESOURCE_TABLES)

    def href(self, resource_id: str) -> str:
        return f"{self.api.base_path}/{self.resource.name}/{resource_id}"

    async def get(self, resource_id: str) -> Document:
        await self.tables.ensure()
        document = await self.collection.get(resource_id)
        if document is None:
            raise self._not_found(resource_id)
        return document

    async def list(self, query: ResourceQuery) -> Page:
        await self.tables.ensure()
        return await self.collection.select(query)

    async def create(self, body: Mapping[str, Any]) -> Document:
        """Store a new resource from a POST body: id, href, @type and defaults set by the server."""
        refused = sorted(self.resource.read_only & set(body))
        if refused:
            raise BadRequest(f"{refused[0]} is set by the server", field=refused[0], code="readOnlyField")
        await self.tables.ensure()
        async with self.database.transaction() as tx:
            return await self.insert(tx, body)

    async def insert(
        self, tx: Transaction, body: Mapping[str, Any], *, resource_id: str | None = None
    ) -> Document:
        """Store a new resource inside the caller's transaction (server-side writers: no read-only check).

        ``resource_id`` lets a writer keep an id it already owns (a product id
        chosen by an order); ``id`` and ``href`` in ``body`` are ignored. The
        tables must exist (``RESOURCE_TABLES``): they cannot be created inside ``tx``.
        """
        now = utcnow()
        resource_id = resource_id or new_id()
        supplied = {key: value for key, value in body.items() if key not in ("id", "href")}
        document: Document = {"id": resource_id, "href": self.href(resource_id), **supplied}
        document.setdefault("@type", self.resource.type_name)
        self._stamp(document, now)
        lifecycle = self.resource.lifecycle
        if lifecycle is not None:
            document.setdefault(lifecycle.attribute, lifecycle.initial)
            lifecycle.check_known(document[lifecycle.attribute])
        self._validate(document)
        await self._check_references(tx, document)
        await self.collection.add(tx, document, now)
        await self._remember(tx, resource_id, document, now)
        await self._emit(tx, EventKind.CREATE, document, now)
        return document

    async def patch(self, resource_id: str, patch: Any, media_type: str) -> Document:
        """Apply a PATCH; read-only fields answer 400, illegal lifecycle moves 409."""
        await self.tables.ensure()
        async with self.database.transaction() as tx:
            return await self.update(tx, resource_id, patch, media_type)

    async def update(
        self,
        tx: Transaction,
        resource_id: str,
        patch: Any,
        media_type: str = MERGE_PATCH,
        *,
        enforce_read_only: bool = True,
    ) -> Document:
        """Apply ``patch`` inside the caller's transaction; lifecycle moves are always checked.

        Server-side writers pass ``enforce_read_only=False`` to set attributes
        clients may not (a bill's amounts); ``id``, ``href`` and the last-update
        stamp stay managed by the server either way.
        """
        stored = await self.collection.load(tx, resource_id)
        if stored is None:
            raise self._not_found(resource_id)
        before = stored.document
        after = apply_patch(before, patch, media_type)
        changed = changed_fields(before, after)
        self._check_writable(changed, self.resource.read_only if enforce_read_only else frozenset())
        if not changed:
            return before
        lifecycle = self.resource.lifecycle
        state_changed = lifecycle is not None and lifecycle.attribute in changed
        if lifecycle is not None and state_changed:
            lifecycle.check_move(before.get(lifecycle.attribute), after.get(lifecycle.attribute))
        now = utcnow()
        self._stamp(after, now)
        self._validate(after)
        await self._check_references(tx, after, before)
        await self.collection.replace(tx, after, stored.version)
        await self._remember(tx, resource_id, after, now)
        if state_changed:
            await self._emit(tx, EventKind.STATE_CHANGE, after, now)
        attributes = [name for name in changed if not (lifecycle and name == lifecycle.attribute)]
        if attributes:
            await self._emit(tx, EventKind.ATTRIBUTE_VALUE_CHANGE, after, now, attributes)
        return after

    async def delete(self, resource_id: str) -> None:
        await self.tables.ensure()
        async with self.database.transaction() as tx:
            await self.remove(tx, resource_id)

    async def remove(self, tx: Transaction, resource_id: str) -> None:
        """Delete inside the caller's transaction, emitting the DeleteEvent; 404 if there is none."""
        stored = await self.collection.load(tx, resource_id)
        if stored is None or not await self.collection.remove(tx, resource_id):
            raise self._not_found(resource_id)
        now = utcnow()
        await self._remember(tx, resource_id, None, now)
        await self._emit(tx, EventKind.DELETE, stored.document, now)

    async def get_as_of(self, resource_id: str, moment: datetime) -> Document:
        """The resource as it was at ``moment`` (``keep_history`` types); 404 if it did not exist then."""
        await self.tables.ensure()
        document = await self.collection.get_as_of(resource_id, moment)
        if document is None:
            then = format_time(moment)
            raise ResourceNotFound(f"no {self.resource.name} with id {resource_id!r} as of {then}")
        return document

    async def list_as_of(self, query: ResourceQuery, moment: datetime) -> Page:
        """The page ``query`` asks for among the resources as they were at ``moment``."""
        await self.tables.ensure()
        return apply_query(await self.collection.all_as_of(moment), query)

    async def _remember(
        self, tx: Transaction, resource_id: str, document: Document | None, now: datetime
    ) -> None:
        if self.resource.keep_history:
            await self.collection.remember(tx, resource_id, document, now)

    def _check_writable(self, changed: Sequence[str], read_only: frozenset[str]) -> None:
        managed = set(read_only) | {"id", "href"}
        if self.resource.last_update:
            managed.add(self.resource.last_update)
        for name in changed:
            if name in managed:
                raise BadRequest(f"{name} is read-only", field=name, code="readOnlyField")

    def _stamp(self, document: Document, now: datetime) -> None:
        if self.resource.last_update:
            document[self.resource.last_update] = format_time(now)

    def _validate(self, document: Mapping[str, Any]) -> None:
        if self.resource.validate is not None:
            self.resource.validate(document)

    def _not_found(self, resource_id: str) -> ResourceNotFound:
        return ResourceNotFound(f"no {self.resource.name} with id {resource_id!r}")

    async def _check_references(
        self, tx: Transaction, document: Mapping[str, Any], before: Mapping[str, Any] | None = None
    ) -> None:
        """400 naming the attribute when it refers to a resource of this API that does not exist.

        On an update only references the write adds are checked: a resource whose referent was
        deleted since can still be patched. A reference whose href is absolute or outside this
        API (a federated catalog) is not this API's to check.
        """
        for path, target in self.resource.references.items():
            known = set(referenced_ids(before, path, self.api.base_path)) if before is not None else set()
            collection = ResourceCollection(self.database, f"{self.api.name}/{target}")
            for referenced in referenced_ids(document, path, self.api.base_path):
                if referenced not in known and await collection.load(tx, referenced) is None:
                    raise BadRequest(
                        f"{path} refers to {target} {referenced!r}, which does not exist",
                        field=path,
                        code="unknownReference",
                    )

    async def _emit(
        self,
        tx: Transaction,
        kind: EventKind,
        document: Document,
        now: datetime,
        field_path: Sequence[str] = (),
    ) -> None:
        if kind not in self.resource.events:
            return
        envelope = Envelope(
            event_type=self.resource.event_type(kind),
            payload={self.resource.name: document},
            entity_key=str(document["id"]),
            event_time=now,
            producer=self.api.producer,
            domain=self.api.name,
            title=f"{self.resource.type_name} {kind.value}",
            extra={"fieldPath": ",".join(field_path)} if field_path else {},
        )
        await self.sink.emit(tx, envelope, self.api.topic)


# ``date-time`` is the one format asserted on what clients send (see is_date_time); the specs'
# ``uri`` would refuse the relative hrefs TMF payloads carry, ``float`` is not a JSON Schema format.
DATE_TIME_CHECKER = FormatChecker(formats=())
DATE_TIME_CHECKER.checks("date-time")(is_date_time)


def schema_validator(definitions: Mapping[str, Any], name: str) -> Validator:
    """A validator for the JSON Schema ``definitions[name]`` (Swagger 2 definitions are draft 4).

    The error names the offending field as a dotted path (``validFor.startDateTime``).
    """
    schema = {"$ref": f"#/definitions/{name}", "definitions": definitions}
    validator = Draft4Validator(schema, format_checker=DATE_TIME_CHECKER)
    certainly_valid = quick_check(schema, Draft4Validator, {"date-time": is_date_time})

    def validate(document: Mapping[str, Any]) -> None:
        if certainly_valid(document):
            return
        error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
        if error is None:
            return
        path = [str(part) for part in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing = [n for n in error.validator_value if n not in error.instance]
            path.append(str(missing[0]) if missing else "")
            raise BadRequest(f"{'.'.join(path)} is required", field=".".join(path), code="missingBodyField")
        name = ".".join(path) or "body"
        raise BadRequest(f"{name}: {error.message}", field=name, code="invalidBodyField")

    return validate


def load_definitions(package: str, filename: str) -> dict[str, Any]:
    """The ``definitions`` of a spec-derived schema file shipped inside ``package``."""
    text = files(package).joinpath(filename).read_text(encoding="utf-8")
    loaded: dict[str, Any] = orjson.loads(text)["definitions"]
    return loaded


def openapi_schemas(definitions: Mapping[str, Any]) -> dict[str, Any]:
    """Swagger 2 ``definitions`` as OpenAPI 3 ``components.schemas`` (references rewritten)."""
    text = orjson.dumps(definitions).decode().replace("#/definitions/", "#/components/schemas/")
    schemas: dict[str, Any] = orjson.loads(text)
    return schemas


def spec_validator(definitions: Mapping[str, Any], type_name: str) -> Validator:
    """Checks a stored document against ``type_name`` and, if the spec has one, ``type_name_Create``.

    The resource schema types every attribute; the ``_Create`` schema adds the
    attributes a client must supply (which the resource schema does not list).
    """
    stored = schema_validator(definitions, type_name)
    create_name = f"{type_name}_Create"
    create = schema_validator(definitions, create_name) if create_name in definitions else None

    def validate(document: Mapping[str, Any]) -> None:
        if create is not None:
            create({key: value for key, value in document.items() if key not in ("id", "href")})
        stored(document)

    return validate
