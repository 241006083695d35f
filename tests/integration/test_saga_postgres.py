from __future__ import annotations

import asyncio

import pytest

from strowger.saga import SagaStatus, StepStatus
from strowger.store.db import Database
from tests.contract.saga_contract import Harness, SagaContract

pytestmark = pytest.mark.integration


class TestSagaPostgres(SagaContract):
    @pytest.fixture
    def database(self, postgres_db: Database) -> Database:
        return postgres_db

    @pytest.fixture
    def row_locks(self) -> bool:
        return True

    async def test_the_tick_skips_a_saga_a_reply_batch_holds_instead_of_waiting(
        self, harness: Harness
    ) -> None:
        # A batch of replies locks its sagas first; the tick must neither wait for it nor
        # deadlock with it: it takes the other overdue sagas and leaves that one for its next pass.
        await harness.start("saga-1", service="svc-1")
        await harness.start("saga-2", service="svc-2")
        harness.clock.advance(11)  # both replies overdue
        held, release = asyncio.Event(), asyncio.Event()

        async def reply_batch() -> None:
            async with harness.database.transaction() as tx:
                await harness.engine.store.lock(tx, ["saga-2"])
                held.set()
                await release.wait()

        batch = asyncio.create_task(reply_batch())
        await held.wait()
        async with asyncio.timeout(30):  # fails instead of hanging if the tick waited for the lock
            async with harness.database.transaction() as tx:
                report = await harness.engine.tick(tx)
        assert report.advanced == ("saga-1",)
        release.set()
        await batch
        await harness.tick()
        for saga_id in ("saga-1", "saga-2"):
            state = await harness.get(saga_id)
            assert state.status is SagaStatus.RUNNING
            assert state.steps[0].status is StepStatus.RETRY_WAIT

    async def test_two_batches_locking_the_same_sagas_in_any_order_wait_instead_of_deadlocking(
        self, harness: Harness
    ) -> None:
        for saga_id in ("saga-1", "saga-2"):
            await harness.start(saga_id, service=saga_id)
        first_holds, finish_first = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def first() -> None:
            async with harness.database.transaction() as tx:
                await harness.engine.store.lock(tx, ["saga-1", "saga-2"])
                first_holds.set()
                await finish_first.wait()
                order.append("first")

        async def second() -> None:
            async with harness.database.transaction() as tx:
                await harness.engine.store.lock(tx, ["saga-2", "saga-1"])  # sorted: saga-1 first
                order.append("second")

        one = asyncio.create_task(first())
        await first_holds.wait()
        two = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not two.done()  # waiting for saga-1, holding nothing the first batch needs
        finish_first.set()
        async with asyncio.timeout(30):
            await asyncio.gather(one, two)
        assert order == ["first", "second"]
