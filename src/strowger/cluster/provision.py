"""Each component of a cluster in its own PostgreSQL schema, as its own role (docs/operations.md).

:func:`provision` runs as the cluster's database URL (the *admin*: a superuser, or a role that
may create roles and schemas and SET ROLE to them) before any process starts:

* per component, a LOGIN role ``cluster_<id>_<role>`` with a generated password, owner of the
  schema ``cluster_<id>_<schema>`` and of nothing else (no privilege for PUBLIC on it);
* the tables other components are granted, created in their owner's schema as the owner (so the
  grants have something to name and a borrower never creates an empty copy of its own);
* the grants of :mod:`strowger.components.database`, and nothing more, and in each borrower's
  schema a view of the same name onto each table it borrows (its search_path stays its own);
* the *directory* schema ``cluster_<id>`` (the plan's ``database_schema``): read-only
  ``UNION ALL`` views over the components' tables, owned by the admin. operations is granted
  the dead letters, traces, inboxes and ``outbox_backlog`` (counts per component) there, and
  UPDATE, DELETE on the ``parked`` of each component with consumers (replay, discard), whose
  ids get a range of their own; the admin's checks (chaos) read everything.

It returns each component's environment: its own URL (role and password), schema and the
schema map. :func:`deprovision` drops every schema and role of the cluster, also after a
start that failed halfway. Passwords never reach a log: URLs are shown through redact_url, and
the server receives a SCRAM verifier, not the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from strowger.cluster.plan import ClusterPlan
from strowger.components.database import (
    CROSSINGS,
    DIRECTORY,
    DIRECTORY_VIEWS_FOR_OPERATIONS,
    OPERATIONS,
    OPERATIONS_DEAD_LETTER_GRANTS,
    OUTBOX_BACKLOG,
    RELAY,
    RELAY_GRANTS,
    borrowed_by,
    borrowed_names,
    parked_id_range,
    parks_dead_letters,
)
from strowger.components.registry import parse_component
from strowger.settings import redact_url
from strowger.store.db import TableSet
from strowger.store.postgres import ddl_target, existence_check, to_psycopg

log = logging.getLogger("strowger.cluster")

PASSWORD_BYTES = 24


class ProvisionError(RuntimeError):
    """The cluster's schemas and roles could not be set up (what was created has been dropped)."""


def components_of(plan: ClusterPlan) -> list[str]:
    """The components the plan runs, in plan order."""
    return list(dict.fromkeys(spec.component for spec in plan.processes))


def schema_of(plan: ClusterPlan, component: str) -> str:
    return f"{plan.database_schema}_{parse_component(component).schema}"


def role_of(plan: ClusterPlan, component: str) -> str:
    return f"{plan.database_schema}_{parse_component(component).role}"


def schema_map(plan: ClusterPlan) -> dict[str, str]:
    """Every component's schema, and the directory's (``STROWGER_DATABASE_SCHEMAS``)."""
    return {DIRECTORY: plan.database_schema, **{c: schema_of(plan, c) for c in components_of(plan)}}


def owned_table_sets(component: str) -> list[TableSet]:
    """What ``component`` owns and others are granted: created before any process starts."""
    from strowger.components.inventory.states import SERVICE_STATE_VIEW
    from strowger.components.resource_ordering.pools import POOL_TABLES
    from strowger.events.registry import REGISTRY_TABLES
    from strowger.ops.trace_timeline import TRACE_TABLES
    from strowger.projections.sagas import SAGA_LOG_ORDER
    from strowger.saga.store import SAGA_TABLES
    from strowger.store.deadletters import PARKED_TABLES
    from strowger.store.inbox import INBOX_TABLES
    from strowger.store.outbox import OUTBOX_TABLES
    from strowger.tmf.hubs import HUB_TABLES
    from strowger.tmf.resources import RESOURCE_TABLES

    shared = {
        "catalog": [RESOURCE_TABLES],
        "service-ordering": [SAGA_TABLES, SAGA_LOG_ORDER],
        "hub-delivery": [HUB_TABLES],
        OPERATIONS: [REGISTRY_TABLES],
        "resource-ordering": [POOL_TABLES],  # reconciliation reads the pools' claims
        "inventory": [RESOURCE_TABLES, SERVICE_STATE_VIEW],  # reconciliation reads services' states
    }
    return [OUTBOX_TABLES, INBOX_TABLES, PARKED_TABLES, TRACE_TABLES, *shared.get(component, [])]


def _targets(table_set: TableSet) -> set[str]:
    return {target for target in map(ddl_target, table_set.ddl("postgresql")) if target}


def database_url_as(url: str, role: str, password: str) -> str:
    """``url`` with another user and password (host, database and options kept)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"[{host}]" if ":" in host else host
    if parts.port:
        where += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{where}"))


async def provision(plan: ClusterPlan) -> dict[str, dict[str, str]]:
    """Create the schemas, roles, shared tables, grants and views; each component's environment."""
    try:
        async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as admin:
            environments = await _provision(admin, plan)
    except (psycopg.Error, OSError) as exc:
        await _drop_quietly(plan)
        where = redact_url(plan.database_url)
        raise ProvisionError(f"cannot set up the cluster's schemas and roles at {where}: {exc}") from exc
    except BaseException:
        await _drop_quietly(plan)
        raise
    log.info("cluster schemas and roles created", extra={"schemas": len(environments) + 1})
    return environments


async def provision_deployment(plan: ClusterPlan, urls: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Create or bring up to date the schemas, roles, grants and views of a long-lived deployment.

    For Kubernetes and any deployment whose processes are started by something else: ``urls``
    holds each component's own database URL (its Secret), whose user must be the component's
    role and whose password becomes the role's. Safe to run again (after an upgrade, or to
    refresh the directory once the components have created their tables): what exists is kept
    or updated, and nothing is ever dropped, even when a step fails."""
    passwords = {component: _password_in(plan, component, urls) for component in components_of(plan)}
    try:
        async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as admin:
            return await _provision(admin, plan, passwords)
    except (psycopg.Error, OSError) as exc:
        where = redact_url(plan.database_url)
        raise ProvisionError(f"cannot set up the deployment's schemas and roles at {where}: {exc}") from exc


def _password_in(plan: ClusterPlan, component: str, urls: Mapping[str, str]) -> str:
    """The password of ``component``'s URL, which must log in as the component's role."""
    url = urls.get(component)
    if not url:
        raise ProvisionError(f"no database URL for component {component!r}")
    parts = urlsplit(url)
    expected = role_of(plan, component)
    if unquote(parts.username or "") != expected or not parts.password:
        raise ProvisionError(
            f"the database URL of {component!r} ({redact_url(url)}) must log in as {expected!r} "
            "with a password"
        )
    return unquote(parts.password)


async def _provision(
    admin: psycopg.AsyncConnection[Any], plan: ClusterPlan, passwords: Mapping[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Everything :func:`provision` creates; idempotent, so a deployment may run it again."""
    schemas = schema_map(plan)
    directory = sql.Identifier(plan.database_schema)
    await admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(directory))
    await admin.execute(
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(plan.database_schema))
    )
    environments: dict[str, dict[str, str]] = {}
    for component in components_of(plan):
        password = (passwords or {}).get(component) or secrets.token_urlsafe(PASSWORD_BYTES)
        # A fresh cluster never takes over a role that already exists; a deployment updates its own.
        await _create_owner(
            admin, role_of(plan, component), schemas[component], password, existing_ok=passwords is not None
        )
        borrowed = borrowed_names(component, schemas)  # operations' dead letters are the directory's
        owned = [ts for ts in owned_table_sets(component) if not borrowed & _targets(ts)]
        await _create_tables_as(admin, role_of(plan, component), schemas[component], owned)
        if "parked" not in borrowed:
            await _place_parked_ids(admin, role_of(plan, component), schemas[component], component)
        environments[component] = {
            "STROWGER_DATABASE_URL": database_url_as(plan.database_url, role_of(plan, component), password),
            "STROWGER_DATABASE_SCHEMA": schemas[component],
            "STROWGER_DATABASE_SCHEMAS": orjson.dumps(schemas).decode(),
        }
    await _grant_crossings(admin, plan, schemas)
    await refresh_directory(plan, admin)
    for component in components_of(plan):
        await _create_borrowed_views(admin, role_of(plan, component), schemas[component], component, schemas)
    return environments


async def _create_borrowed_views(
    admin: psycopg.AsyncConnection[Any], role: str, schema: str, component: str, schemas: Mapping[str, str]
) -> None:
    """In ``schema``, one view per borrowed table, owned by the borrower (its grants apply)."""
    await admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        for item in borrowed_by(component, schemas):
            view = sql.SQL("CREATE OR REPLACE VIEW {}.{} AS SELECT * FROM {}.{}").format(
                sql.Identifier(schema),
                sql.Identifier(item.name),
                sql.Identifier(item.source_schema),
                sql.Identifier(item.name),
            )
            await admin.execute(view)
    finally:
        await admin.execute("RESET ROLE")


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, RFC 7677).

    Sent instead of the password, so the clear password never reaches the server's statement
    log or ``pg_stat_activity``."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _create_owner(
    admin: psycopg.AsyncConnection[Any], role: str, schema: str, password: str, *, existing_ok: bool
) -> None:
    """The LOGIN role owning ``schema``: created, or (``existing_ok``) its password and attributes reset."""
    cursor = await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    verb = "ALTER" if existing_ok and await cursor.fetchone() else "CREATE"
    await admin.execute(
        sql.SQL(verb + " ROLE {} LOGIN NOINHERIT PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(scram_verifier(password))
        )
    )
    await admin.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        )
    )
    await admin.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
    # Without a schema setting (a tool connecting with the URL alone) it still lands in its own.
    await admin.execute(
        sql.SQL("ALTER ROLE {} SET search_path = {}").format(sql.Identifier(role), sql.Identifier(schema))
    )


async def _create_tables_as(
    admin: psycopg.AsyncConnection[Any], role: str, schema: str, table_sets: Iterable[TableSet]
) -> None:
    """Create ``table_sets`` in ``schema`` owned by ``role`` (the admin acting as it).

    Each statement whose table, index or column is there already is skipped, not the whole set
    once its tables exist: a column added by a later release (saga_log's tx_id) must be in the
    table before the borrowers' views are made, since a view's ``*`` is expanded when it is made."""
    await admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        await admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for table_set in table_sets:
            for statement in table_set.ddl("postgresql"):
                if not await _applied(admin, statement):  # a live deployment's DDL would lock writers
                    await admin.execute(statement.encode())  # bytes: no placeholder parsing of '%'
    finally:
        await admin.execute("RESET ROLE")
        await admin.execute("RESET search_path")


async def _applied(admin: psycopg.AsyncConnection[Any], statement: str) -> bool:
    check = existence_check(statement)
    if check is None:
        return False
    cursor = await admin.execute(to_psycopg(check[0]), check[1])
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _place_parked_ids(
    admin: psycopg.AsyncConnection[Any], role: str, schema: str, component: str
) -> None:
    """Give ``component``'s dead letters an id range of their own (once: a re-run keeps its place)."""
    first, last = parked_id_range(component)
    cursor = await admin.execute(
        "SELECT seqrelid::regclass::text, seqmin FROM pg_sequence "
        "WHERE seqrelid = pg_get_serial_sequence(%s, 'id')::regclass",
        (sql.Identifier(schema, "parked").as_string(admin),),
    )
    row = await cursor.fetchone()
    if row is None or int(row[1]) == first:
        return
    bounds = sql.SQL("MINVALUE {0} MAXVALUE {1} START WITH {0} RESTART WITH {0}").format(
        sql.Literal(first), sql.Literal(last)
    )
    await admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))  # the sequence's owner
    try:
        await admin.execute(sql.SQL("ALTER SEQUENCE {} ").format(sql.SQL(str(row[0]))) + bounds)
    finally:
        await admin.execute("RESET ROLE")


async def _grant(
    admin: psycopg.AsyncConnection[Any], privileges: str, schema: str, table: str, role: str
) -> None:
    await admin.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role))
    )
    statement = sql.SQL("GRANT {} ON {}.{} TO {}").format(
        sql.SQL(privileges), sql.Identifier(schema), sql.Identifier(table), sql.Identifier(role)
    )
    await admin.execute(statement)


async def _grant_crossings(
    admin: psycopg.AsyncConnection[Any], plan: ClusterPlan, schemas: Mapping[str, str]
) -> None:
    present = set(components_of(plan))
    for crossing in CROSSINGS:
        if crossing.owner not in present:
            continue
        for reader in sorted(present.intersection(crossing.readers)):
            for table in crossing.tables:
                await _grant(
                    admin, crossing.privileges, schemas[crossing.owner], table, role_of(plan, reader)
                )
    if RELAY in present:
        for component in sorted(present):
            borrowed = borrowed_names(component, schemas)  # operations has no inbox of its own
            for table, privileges in RELAY_GRANTS:
                if table not in borrowed:
                    await _grant(admin, privileges, schemas[component], table, role_of(plan, RELAY))
    if OPERATIONS in present:  # replay and discard write the owner's dead letters
        for component in sorted(filter(parks_dead_letters, present)):
            for table, privileges in OPERATIONS_DEAD_LETTER_GRANTS:
                await _grant(admin, privileges, schemas[component], table, role_of(plan, OPERATIONS))


async def refresh_directory(plan: ClusterPlan, admin: psycopg.AsyncConnection[Any] | None = None) -> int:
    """(Re)create the directory's views over every table the components have now; how many views.

    Called once tables exist (at provisioning, after every process is ready). operations keeps
    SELECT on its views (CREATE OR REPLACE keeps the grants)."""
    if admin is None:
        async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as connection:
            return await refresh_directory(plan, connection)
    schemas = [schema_of(plan, component) for component in components_of(plan)]
    cursor = await admin.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE' ORDER BY table_name, table_schema",
        (schemas,),
    )
    holders: dict[str, list[str]] = {}
    for schema, table in await cursor.fetchall():
        holders.setdefault(str(table), []).append(str(schema))
    created = 0
    for table, owners in holders.items():
        created += await _union_view(admin, plan.database_schema, table, owners)
    component_in = {schema_of(plan, component): component for component in components_of(plan)}
    outboxes = [(component_in[schema], schema) for schema in holders.get("outbox", [])]
    backlog = await _outbox_backlog_view(admin, plan.database_schema, outboxes)
    if OPERATIONS in components_of(plan):
        operations = role_of(plan, OPERATIONS)
        views = [table for table in DIRECTORY_VIEWS_FOR_OPERATIONS if table in holders]
        for table in views + [OUTBOX_BACKLOG] * backlog:
            await _grant(admin, "SELECT", plan.database_schema, table, operations)
    return created + backlog


async def _outbox_backlog_view(
    admin: psycopg.AsyncConnection[Any], directory: str, outboxes: list[tuple[str, str]]
) -> int:
    """``directory.outbox_backlog``: per (component, schema) of ``outboxes``, its unpublished rows
    and the oldest one's ``created_at``; operations reads counts, not other components' events."""
    if not outboxes:
        return 0
    selects = [
        sql.SQL(
            "SELECT {}::text AS component, COUNT(*) AS backlog, MIN(created_at) AS oldest_created_at "
            "FROM {}.outbox WHERE published_at IS NULL"
        ).format(sql.Literal(component), sql.Identifier(schema))
        for component, schema in outboxes
    ]
    statement = sql.SQL("CREATE OR REPLACE VIEW {}.{} AS ").format(
        sql.Identifier(directory), sql.Identifier(OUTBOX_BACKLOG)
    )
    await admin.execute(statement + sql.SQL(" UNION ALL ").join(selects))
    return 1


async def _union_view(
    admin: psycopg.AsyncConnection[Any], directory: str, table: str, owners: list[str]
) -> int:
    """``directory.table`` = UNION ALL of ``table`` in each owner schema; 0 if their columns differ."""
    cursor = await admin.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (owners[0], table),
    )
    columns = sql.SQL(", ").join(sql.Identifier(str(row[0])) for row in await cursor.fetchall())
    selects = [
        sql.SQL("SELECT {} FROM {}.{}").format(columns, sql.Identifier(owner), sql.Identifier(table))
        for owner in owners
    ]
    statement = sql.SQL("CREATE OR REPLACE VIEW {}.{} AS ").format(
        sql.Identifier(directory), sql.Identifier(table)
    )
    try:
        async with admin.transaction():
            await admin.execute(statement + sql.SQL(" UNION ALL ").join(selects))
    except psycopg.Error as exc:  # a table whose columns differ between schemas: no view, say so
        log.warning("no directory view for %s: %s", table, exc)
        return 0
    return 1


async def deprovision(plan: ClusterPlan) -> None:
    """Drop every schema and role of the cluster (those it created, found by their prefix)."""
    prefix = f"{plan.database_schema}_"
    async with await psycopg.AsyncConnection.connect(plan.database_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR starts_with(nspname, %s)",
            (plan.database_schema, prefix),
        )
        for (schema,) in await cursor.fetchall():
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        cursor = await admin.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,))
        for (role,) in await cursor.fetchall():
            await admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def _drop_quietly(plan: ClusterPlan) -> None:
    try:
        await deprovision(plan)
    except (psycopg.Error, OSError):  # the cause is what the caller reports
        log.exception("could not drop the half-created schemas and roles of cluster %s", plan.cluster_id)
