"""ROM resource pools: IPv4 addresses, VLAN ids, OLT ports, MSISDNs, IMSIs... on the database port.

Every value of a pool is a pre-materialised *slot* row ``(pool, ordinal)``; the
value itself is rendered from the ordinal by the pool's definition (an address
of a CIDR, a number of a range). Allocation claims the lowest free slot with ONE
``UPDATE ... WHERE ordinal = (SELECT ... LIMIT 1)``:

* uniqueness is the primary key: a slot is one row, so two holders can never
  get the same value, whatever the concurrency;
* on PostgreSQL the sub-select takes ``FOR UPDATE SKIP LOCKED``: concurrent
  allocators claim different slots without waiting for each other's commit
  (an "insert the first free value" design would make them queue on the same
  unique-index entry until the first transaction commits);
* on SQLite the writer is single (``BEGIN IMMEDIATE``), so the claim is atomic;
* idempotency is ``UNIQUE (pool, request_id)``: asking again with the same
  request id returns the value already claimed; if two transactions race with
  the same request id, the loser hits the constraint inside a savepoint, rolls
  back to it and returns the winner's value.

Slots are materialised in SQL (``generate_series`` / a recursive CTE), so a
pool of a million MSISDNs installs in seconds; growing a pool adds slots,
shrinking removes only free ones.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from strowger.errors import ConfigError, PermanentError, TransientError
from strowger.store.db import Database, TableSet, Transaction


class UnknownPool(PermanentError):
    """No pool of that name (or of that type and scope) is defined."""


class PoolExhausted(PermanentError):
    """Every value of the pool is allocated."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        super().__init__(f"resource pool {pool!r} is exhausted: every value is allocated")


class PoolBusy(TransientError):
    """Every free value is being claimed by concurrent transactions; retry once they commit or roll back."""


@dataclass(frozen=True)
class Ipv4Pool:
    """The usable host addresses of a CIDR (network and broadcast addresses skipped below /31)."""

    name: str
    cidr: str
    type: str = "ipv4"
    scope: str | None = None

    @property
    def _network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=True)

    @property
    def _skips_edges(self) -> bool:
        return self._network.prefixlen < 31  # RFC 3021: /31 and /32 have no network/broadcast address

    @property
    def size(self) -> int:
        total = self._network.num_addresses
        return total - 2 if self._skips_edges else total

    def value(self, ordinal: int) -> str:
        first = int(self._network.network_address) + (1 if self._skips_edges else 0)
        return str(ipaddress.IPv4Address(first + ordinal))


@dataclass(frozen=True)
class NumberPool:
    """The numbers ``first..last`` (inclusive), zero-padded to ``width``, put into ``template`` at ``{n}``."""

    name: str
    type: str
    first: int
    last: int
    width: int = 0
    template: str = "{n}"
    scope: str | None = None

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def value(self, ordinal: int) -> str:
        return self.template.replace("{n}", str(self.first + ordinal).zfill(self.width))


PoolDefinition = Ipv4Pool | NumberPool


def pool_from_data(data: Mapping[str, Any]) -> PoolDefinition:
    """A definition from catalog data: ``{"name", "type", "cidr"}`` or ``{"name", "type", "first", "last"}``.

    Number bounds may be strings so their width (leading zeros) is kept, e.g. IMSIs.
    """
    try:
        name, pool_type, scope = str(data["name"]), str(data["type"]), data.get("scope")
        if "cidr" in data:
            pool: PoolDefinition = Ipv4Pool(name, str(data["cidr"]), pool_type, scope)
        else:
            first, last = str(data["first"]), str(data["last"])
            width = len(first)  # keeps leading zeros; numbers above ``first`` are never shorter
            template = str(data.get("template", "{n}"))
            pool = NumberPool(name, pool_type, int(first), int(last), width, template, scope)
        if pool.size <= 0:
            raise ValueError("the pool has no value")
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"resource pool {data.get('name', '?')}", "name, type and a cidr or first/last", data
        ) from exc
    return pool


@dataclass(frozen=True)
class Allocation:
    pool: str
    value: str
    holder: str
    request_id: str


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    size: int
    allocated: int

    @property
    def free(self) -> int:
        return self.size - self.allocated


POOL_TABLES = TableSet(
    "resource_pools",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS resource_pool (
            name TEXT PRIMARY KEY, type TEXT NOT NULL, scope TEXT, size INTEGER NOT NULL,
            definition TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS resource_pool_slot (
            pool TEXT NOT NULL, ordinal INTEGER NOT NULL, holder TEXT, request_id TEXT, allocated_at TEXT,
            PRIMARY KEY (pool, ordinal), UNIQUE (pool, request_id)) WITHOUT ROWID""",
        """CREATE INDEX IF NOT EXISTS resource_pool_slot_free
            ON resource_pool_slot (pool, ordinal) WHERE request_id IS NULL""",
        """CREATE INDEX IF NOT EXISTS resource_pool_slot_holder
            ON resource_pool_slot (holder) WHERE holder IS NOT NULL""",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS resource_pool (
            name TEXT PRIMARY KEY, type TEXT NOT NULL, scope TEXT, size BIGINT NOT NULL,
            definition TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS resource_pool_slot (
            pool TEXT NOT NULL, ordinal BIGINT NOT NULL, holder TEXT, request_id TEXT,
            allocated_at TIMESTAMPTZ, PRIMARY KEY (pool, ordinal), UNIQUE (pool, request_id))""",
        """CREATE INDEX IF NOT EXISTS resource_pool_slot_free
            ON resource_pool_slot (pool, ordinal) WHERE request_id IS NULL""",
        """CREATE INDEX IF NOT EXISTS resource_pool_slot_holder
            ON resource_pool_slot (holder) WHERE holder IS NOT NULL""",
    ],
)

_MATERIALISE = {
    "sqlite": """WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
        INSERT INTO resource_pool_slot (pool, ordinal) SELECT ?, n FROM seq WHERE true
        ON CONFLICT DO NOTHING""",
    "postgresql": """INSERT INTO resource_pool_slot (pool, ordinal)
        SELECT CAST(? AS TEXT), n FROM generate_series(0, CAST(? AS BIGINT)) AS n
        ON CONFLICT DO NOTHING""",
}

_CLAIM = """UPDATE resource_pool_slot SET holder = ?, request_id = ?, allocated_at = CURRENT_TIMESTAMP
    WHERE pool = ? AND request_id IS NULL AND ordinal = (
        SELECT ordinal FROM resource_pool_slot WHERE pool = ? AND request_id IS NULL
        ORDER BY ordinal LIMIT 1{lock})
    RETURNING ordinal"""

_CLAIMS = {
    "sqlite": _CLAIM.format(lock=""),
    "postgresql": _CLAIM.format(lock=" FOR UPDATE SKIP LOCKED"),
}

_UNIQUE_VIOLATIONS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)


class ResourcePools:
    """The pools of one database, defined by data (the catalog declares them)."""

    def __init__(self, database: Database, definitions: Iterable[PoolDefinition]) -> None:
        self._database = database
        self._pools = {pool.name: pool for pool in definitions}

    @property
    def definitions(self) -> Sequence[PoolDefinition]:
        return list(self._pools.values())

    def definition(self, pool: str) -> PoolDefinition:
        try:
            return self._pools[pool]
        except KeyError:
            raise UnknownPool(f"no resource pool named {pool!r}") from None

    def pools_of(self, pool_type: str, scope: str | None = None) -> list[PoolDefinition]:
        """The pools of ``pool_type`` (and of ``scope`` when given, e.g. one OLT), by name."""
        found = [
            pool
            for pool in self._pools.values()
            if pool.type == pool_type and (scope is None or pool.scope == scope)
        ]
        if not found:
            shown = pool_type if scope is None else f"{pool_type} in scope {scope!r}"
            raise UnknownPool(f"no resource pool of type {shown}")
        return sorted(found, key=lambda pool: pool.name)

    async def install(self) -> None:
        """Create the tables and the slots of every pool (idempotent; grows and shrinks pools)."""
        await self._database.create_tables(POOL_TABLES)
        async with self._database.transaction() as tx:
            for pool in self._pools.values():
                await self._install_pool(tx, pool)

    async def _install_pool(self, tx: Transaction, pool: PoolDefinition) -> None:
        described = json.dumps(_identity(pool), sort_keys=True)
        row = await tx.fetchone("SELECT definition FROM resource_pool WHERE name = ?", (pool.name,))
        if row is not None and row[0] != described and await _allocated(tx, pool.name):
            raise ConfigError(
                f"resource pool {pool.name}", "the same cidr/first/template while values are allocated", pool
            )
        await tx.execute(
            """INSERT INTO resource_pool (name, type, scope, size, definition) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET type = excluded.type, scope = excluded.scope,
               size = excluded.size, definition = excluded.definition""",
            (pool.name, pool.type, pool.scope, pool.size, described),
        )
        params = (pool.size - 1, pool.name) if self._database.kind == "sqlite" else (pool.name, pool.size - 1)
        await tx.execute(_MATERIALISE[self._database.kind], params)
        await tx.execute(
            "DELETE FROM resource_pool_slot WHERE pool = ? AND ordinal >= ? AND request_id IS NULL",
            (pool.name, pool.size),
        )

    async def allocate(self, tx: Transaction, pool: str, holder: str, request_id: str) -> str:
        """Claim a free value of ``pool`` for ``holder``, within ``tx``.

        The same ``request_id`` returns the same value again. Raises
        :class:`UnknownPool`, :class:`PoolExhausted` (permanent) or
        :class:`PoolBusy` (transient: free values exist but are being claimed).
        """
        definition = self.definition(pool)
        existing = await _ordinal_of(tx, pool, request_id)
        if existing is not None:
            return definition.value(existing)
        ordinal = await self._claim(tx, pool, holder, request_id)
        return definition.value(ordinal)

    async def allocate_any(
        self, tx: Transaction, pool_type: str, holder: str, request_id: str, *, scope: str | None = None
    ) -> Allocation:
        """Claim a value from the first pool of ``pool_type`` (and ``scope``) that has one free."""
        candidates = self.pools_of(pool_type, scope)
        for pool in candidates:  # idempotency across pools: look the request up everywhere first
            existing = await _ordinal_of(tx, pool.name, request_id)
            if existing is not None:
                return Allocation(pool.name, pool.value(existing), holder, request_id)
        for pool in candidates:
            try:
                value = await self.allocate(tx, pool.name, holder, request_id)
            except PoolExhausted:
                continue
            return Allocation(pool.name, value, holder, request_id)
        raise PoolExhausted(", ".join(pool.name for pool in candidates))

    async def _claim(self, tx: Transaction, pool: str, holder: str, request_id: str) -> int:
        try:
            async with tx.savepoint("resource_pool_claim"):
                row = await tx.fetchone(_CLAIMS[self._database.kind], (holder, request_id, pool, pool))
        except _UNIQUE_VIOLATIONS:
            # A concurrent transaction claimed a value for the same request id and committed first.
            winner = await _ordinal_of(tx, pool, request_id)
            if winner is None:
                raise
            return winner
        if row is not None:
            return int(row[0])
        if await _has_free_slot(tx, pool):
            raise PoolBusy(f"every free value of resource pool {pool!r} is being claimed; retry")
        raise PoolExhausted(pool)

    async def release(self, tx: Transaction, pool: str, request_id: str) -> bool:
        """Free the value claimed by ``request_id``; False if there was none (idempotent)."""
        self.definition(pool)
        changed = await tx.execute(
            """UPDATE resource_pool_slot SET holder = NULL, request_id = NULL, allocated_at = NULL
               WHERE pool = ? AND request_id = ?""",
            (pool, request_id),
        )
        return changed > 0

    async def usage(self, pool: str) -> PoolUsage:
        definition = self.definition(pool)
        row = await self._database.fetchone(
            "SELECT COUNT(*) FROM resource_pool_slot WHERE pool = ? AND request_id IS NOT NULL", (pool,)
        )
        return PoolUsage(pool, definition.size, int(row[0]) if row else 0)

    async def allocations_of(self, holder: str) -> list[Allocation]:
        """Every value ``holder`` holds, for reconciliation against the inventory."""
        rows = await self._database.fetchall(
            """SELECT pool, ordinal, request_id FROM resource_pool_slot
               WHERE holder = ? ORDER BY pool, ordinal""",
            (holder,),
        )
        return [
            Allocation(pool, self._render(pool, ordinal), holder, request) for pool, ordinal, request in rows
        ]

    def _render(self, pool: str, ordinal: int) -> str:
        definition = self._pools.get(pool)
        return definition.value(ordinal) if definition else f"{pool}#{ordinal}"  # a pool since undefined


def pools_from_data(database: Database, data: Iterable[Mapping[str, Any]]) -> ResourcePools:
    return ResourcePools(database, [pool_from_data(item) for item in data])


def _identity(pool: PoolDefinition) -> dict[str, Any]:
    """What renders values: changing it would re-number values already held."""
    fields = asdict(pool)
    fields.pop("last", None)
    return fields


async def _ordinal_of(tx: Transaction, pool: str, request_id: str) -> int | None:
    row = await tx.fetchone(
        "SELECT ordinal FROM resource_pool_slot WHERE pool = ? AND request_id = ?", (pool, request_id)
    )
    return None if row is None else int(row[0])


async def _has_free_slot(tx: Transaction, pool: str) -> bool:
    row = await tx.fetchone(
        "SELECT 1 FROM resource_pool_slot WHERE pool = ? AND request_id IS NULL LIMIT 1", (pool,)
    )
    return row is not None


async def _allocated(tx: Transaction, pool: str) -> bool:
    row = await tx.fetchone(
        "SELECT 1 FROM resource_pool_slot WHERE pool = ? AND request_id IS NOT NULL LIMIT 1", (pool,)
    )
    return row is not None
