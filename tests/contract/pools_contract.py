"""The resource pools' contract, subclassed for SQLite and PostgreSQL in tests/integration/test_pools.py."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from strowger.components.decomposition import decompose
from strowger.components.resource_ordering.pools import (
    Ipv4Pool,
    NumberPool,
    PoolExhausted,
    ResourcePools,
    UnknownPool,
    pool_from_data,
    pools_from_data,
)
from strowger.components.sample_catalog import sample_catalog, sample_pools
from strowger.errors import ConfigError, PermanentError
from strowger.store.db import Database

DEFINITIONS = [
    Ipv4Pool("ipv4/tiny", "198.51.100.0/29"),
    Ipv4Pool("ipv4/public", "203.0.113.0/24"),
    NumberPool("vlan/ams", "vlan", 100, 102),
    pool_from_data({"name": "msisdn/nl", "type": "msisdn", "first": "31612000000", "last": "31612000099"}),
    pool_from_data(
        {"name": "imsi/nl", "type": "imsi", "first": "001010000000001", "last": "001010000000100"}
    ),
    pool_from_data(
        {
            "name": "olt-port/OLT-1",
            "type": "olt-port",
            "scope": "OLT-1",
            "first": 1,
            "last": 2,
            "template": "OLT-1/0/{n}",
        }
    ),
    pool_from_data(
        {
            "name": "olt-port/OLT-2",
            "type": "olt-port",
            "scope": "OLT-2",
            "first": 1,
            "last": 2,
            "template": "OLT-2/0/{n}",
        }
    ),
]


class PoolsContract:
    @pytest.fixture
    def database(self) -> Database:
        raise NotImplementedError

    @pytest.fixture
    async def pools(self, database: Database) -> ResourcePools:
        pools = ResourcePools(database, DEFINITIONS)
        await pools.install()
        return pools

    async def allocate(self, database: Database, pools: ResourcePools, pool: str, request_id: str) -> str:
        async with database.transaction() as tx:
            return await pools.allocate(tx, pool, f"holder-{request_id}", request_id)

    async def release(self, database: Database, pools: ResourcePools, pool: str, request_id: str) -> bool:
        async with database.transaction() as tx:
            return await pools.release(tx, pool, request_id)

    async def test_ipv4_pool_skips_network_and_broadcast_then_is_exhausted(
        self, database: Database, pools: ResourcePools
    ) -> None:
        values = [await self.allocate(database, pools, "ipv4/tiny", f"r{n}") for n in range(6)]
        assert values == [f"198.51.100.{n}" for n in range(1, 7)]
        with pytest.raises(PoolExhausted, match="'ipv4/tiny' is exhausted") as raised:
            await self.allocate(database, pools, "ipv4/tiny", "one-too-many")
        assert isinstance(raised.value, PermanentError)
        assert raised.value.pool == "ipv4/tiny"
        usage = await pools.usage("ipv4/tiny")
        assert (usage.size, usage.allocated, usage.free) == (6, 6, 0)

    async def test_allocation_is_idempotent_per_request(
        self, database: Database, pools: ResourcePools
    ) -> None:
        first = await self.allocate(database, pools, "vlan/ams", "order-1/item-1")
        again = await self.allocate(database, pools, "vlan/ams", "order-1/item-1")
        other = await self.allocate(database, pools, "vlan/ams", "order-2/item-1")
        assert first == again == "100"
        assert other == "101"
        assert (await pools.usage("vlan/ams")).allocated == 2

    async def test_release_is_idempotent_and_makes_the_value_reusable(
        self, database: Database, pools: ResourcePools
    ) -> None:
        first = await self.allocate(database, pools, "vlan/ams", "a")
        await self.allocate(database, pools, "vlan/ams", "b")
        assert await self.release(database, pools, "vlan/ams", "a") is True
        assert await self.release(database, pools, "vlan/ams", "a") is False
        assert await self.allocate(database, pools, "vlan/ams", "c") == first
        assert await self.allocate(database, pools, "vlan/ams", "d") == "102"
        with pytest.raises(PoolExhausted):
            await self.allocate(database, pools, "vlan/ams", "e")

    async def test_a_rolled_back_allocation_leaves_the_value_free(
        self, database: Database, pools: ResourcePools
    ) -> None:
        with pytest.raises(RuntimeError):
            async with database.transaction() as tx:
                await pools.allocate(tx, "vlan/ams", "someone", "lost")
                raise RuntimeError("order step failed")
        assert (await pools.usage("vlan/ams")).allocated == 0
        assert await self.allocate(database, pools, "vlan/ams", "kept") == "100"

    async def test_concurrent_allocations_get_distinct_values(
        self, database: Database, pools: ResourcePools
    ) -> None:
        async def allocate(n: int) -> str:
            async with database.transaction() as tx:
                value = await pools.allocate(tx, "ipv4/public", f"service-{n}", f"request-{n}")
                await asyncio.sleep(0.02)  # keep the transactions open together
                return value

        values = await asyncio.gather(*(allocate(n) for n in range(50)))
        assert len(set(values)) == 50
        assert all(
            ipaddress.IPv4Address(value) in ipaddress.IPv4Network("203.0.113.0/24") for value in values
        )
        assert (await pools.usage("ipv4/public")).allocated == 50

    async def test_concurrent_retries_of_one_request_get_one_value(
        self, database: Database, pools: ResourcePools
    ) -> None:
        async def allocate() -> str:
            async with database.transaction() as tx:
                value = await pools.allocate(tx, "ipv4/public", "service-x", "same-request")
                await asyncio.sleep(0.02)
                return value

        values = await asyncio.gather(*(allocate() for _ in range(8)))
        assert len(set(values)) == 1
        assert (await pools.usage("ipv4/public")).allocated == 1

    async def test_number_pools_render_their_values(self, database: Database, pools: ResourcePools) -> None:
        assert await self.allocate(database, pools, "msisdn/nl", "m") == "31612000000"
        assert await self.allocate(database, pools, "imsi/nl", "i") == "001010000000001"
        assert await self.allocate(database, pools, "olt-port/OLT-2", "p") == "OLT-2/0/1"

    async def test_allocations_of_a_holder_for_reconciliation(
        self, database: Database, pools: ResourcePools
    ) -> None:
        async with database.transaction() as tx:
            await pools.allocate(tx, "vlan/ams", "service-9", "s9-vlan")
            await pools.allocate(tx, "ipv4/public", "service-9", "s9-ip")
            await pools.allocate(tx, "ipv4/public", "service-10", "s10-ip")
        held = await pools.allocations_of("service-9")
        assert [(a.pool, a.value, a.request_id) for a in held] == [
            ("ipv4/public", "203.0.113.1", "s9-ip"),
            ("vlan/ams", "100", "s9-vlan"),
        ]

    async def test_allocate_any_moves_to_the_next_pool_of_the_scope(
        self, database: Database, pools: ResourcePools
    ) -> None:
        async with database.transaction() as tx:
            values = [(await pools.allocate_any(tx, "olt-port", "h", f"p{n}")).value for n in range(4)]
            again = await pools.allocate_any(tx, "olt-port", "h", "p3")
            scoped = await pools.allocate_any(tx, "vlan", "h", "v", scope=None)
        assert values == ["OLT-1/0/1", "OLT-1/0/2", "OLT-2/0/1", "OLT-2/0/2"]
        assert again.value == "OLT-2/0/2"
        assert scoped.pool == "vlan/ams"
        async with database.transaction() as tx:
            with pytest.raises(PoolExhausted, match="OLT-1"):
                await pools.allocate_any(tx, "olt-port", "h", "p5", scope="OLT-1")
            with pytest.raises(UnknownPool, match="OLT-9"):
                await pools.allocate_any(tx, "olt-port", "h", "p6", scope="OLT-9")

    async def test_unknown_pools_are_permanent_errors(self, database: Database, pools: ResourcePools) -> None:
        async with database.transaction() as tx:
            with pytest.raises(UnknownPool, match="'nope'"):
                await pools.allocate(tx, "nope", "h", "r")
            with pytest.raises(UnknownPool):
                await pools.release(tx, "nope", "r")

    async def test_install_is_idempotent_and_grows_pools_keeping_allocations(
        self, database: Database, pools: ResourcePools
    ) -> None:
        held = await self.allocate(database, pools, "vlan/ams", "kept")
        await pools.install()
        grown = ResourcePools(database, [*DEFINITIONS[:2], NumberPool("vlan/ams", "vlan", 100, 199)])
        await grown.install()
        assert (await grown.usage("vlan/ams")).size == 100
        assert await self.allocate(database, grown, "vlan/ams", "kept") == held
        assert (await grown.usage("vlan/ams")).allocated == 1
        moved = ResourcePools(database, [NumberPool("vlan/ams", "vlan", 500, 599)])
        with pytest.raises(ConfigError, match="vlan/ams"):
            await moved.install()

    async def test_the_sample_catalog_pools_serve_a_decomposed_order(self, database: Database) -> None:
        pools = pools_from_data(database, sample_pools())
        await pools.install()
        plan = decompose(
            {"id": "1", "action": "add", "productOffering": {"id": "PO-BUNDLE-FIBRE-MOBILE"}},
            sample_catalog(),
        )
        async with database.transaction() as tx:
            allocated = {
                resource.spec_id: await pools.allocate_any(
                    tx, resource.pool_type, resource.ref, resource.ref, scope=resource.pool_scope
                )
                for resource in plan.resources
                if resource.pool_type is not None
            }
        assert {spec: allocation.value for spec, allocation in allocated.items()} == {
            "RS-OLT-PORT": "OLT-AMS-01/1/1/1",
            "RS-CPE": "ZTEG000001",
            "RS-VLAN": "2",
            "RS-IPV4": "100.64.0.1",
            "RS-MSISDN": "31612000000",
            "RS-SIM": "204080000000000",
        }
        assert (await pools.usage("msisdn/nl-0612")).size == 100_000
