"""The activation simulator through the real runtime on the embedded bus: latency, faults, rollback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from strowger.components.activation.api import activation_router
from strowger.components.activation.consumers import activation_consumer
from strowger.components.activation.faults import ActivationSettings
from strowger.components.activation.simulator import NetworkSimulator
from strowger.components.contract import (
    ACTIVATE_SERVICE,
    ACTIVATION_COMMANDS,
    DEACTIVATE_SERVICE,
    SERVICE_EVENTS,
)
from strowger.events.envelope import Envelope
from strowger.store.db import Database
from tests.integration.executors import ExecutorWorld, command, retry_of

pytestmark = pytest.mark.integration

STEPS = [
    {"operation": "activate", "target": "svc-access", "specId": "SS-ACCESS"},
    {"operation": "activate", "target": "svc-internet", "specId": "SS-INTERNET"},
]

World = tuple[ExecutorWorld, NetworkSimulator]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    return cast(
        Database, request.getfixturevalue(f"{'postgres' if request.param == 'postgresql' else 'sqlite'}_db")
    )


@pytest.fixture
async def world(database: Database) -> AsyncIterator[World]:
    world = ExecutorWorld(database)
    simulator = NetworkSimulator(database, world.sink("activation"), rng=random.Random(7), poll_interval=0.2)
    await simulator.ensure_tables()
    await world.start([activation_consumer(simulator)], watch=(SERVICE_EVENTS,))
    scheduler = asyncio.create_task(simulator.run())
    yield world, simulator
    scheduler.cancel()
    _, stuck = await asyncio.wait([scheduler], timeout=15)
    assert not stuck, "the scheduler did not stop when cancelled"
    await world.stop()


def activate(request_id: str, order: str = "SO-1", steps: list[dict[str, Any]] = STEPS) -> Envelope:
    body = {"requestId": request_id, "serviceOrderId": order, "productOrderId": "PO-1", "steps": steps}
    return command(ACTIVATE_SERVICE, {**body, "allocations": []}, entity_key=order)


def deactivate(request_id: str, activation: str, order: str = "SO-1") -> Envelope:
    body = {"requestId": request_id, "serviceOrderId": order, "activationRequestId": activation}
    return command(DEACTIVATE_SERVICE, body, entity_key=order)


async def states(simulator: NetworkSimulator, order: str = "SO-1") -> list[tuple[str, str]]:
    return [(config.element, config.state) for config in await simulator.configuration(order)]


async def test_activation_configures_every_step_once_under_redelivery_and_retry(world: World) -> None:
    bus, simulator = world
    sent = activate("saga-1/activate/action")
    await bus.send(sent, ACTIVATION_COMMANDS)
    await bus.send(sent, ACTIVATION_COMMANDS)  # redelivered
    reply = await bus.reply_to(sent)
    again = await bus.reply_to(await bus.send(retry_of(sent), ACTIVATION_COMMANDS))
    await bus.settle()

    assert reply.event_type == "ServiceActivated" and reply.causation_id == sent.event_id
    assert [step["element"] for step in reply.payload["configured"]] == ["svc-access", "svc-internet"]
    assert again.event_type == "ServiceActivated" and again.payload == reply.payload
    assert len(bus.replies_to(sent)) == 1
    assert await states(simulator) == [("svc-access", "configured"), ("svc-internet", "configured")]


async def test_latency_is_simulated_by_a_delayed_reply_not_by_holding_the_transaction(
    world: World, database: Database
) -> None:
    bus, simulator = world
    simulator.configure(latency_ms=600)
    sent = await bus.send(activate("saga-2/activate/action"), ACTIVATION_COMMANDS)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await simulator.pending() == 0:  # the command was recorded and its transaction committed
        assert loop.time() - started < 10, "the command was never recorded"
        await asyncio.sleep(0.02)
    async with database.transaction() as tx:  # the database is free for others meanwhile
        await tx.execute("SELECT 1")
    assert bus.replies_to(sent) == []
    reply = await bus.reply_to(sent)
    assert reply.event_type == "ServiceActivated"
    assert loop.time() - started >= 0.5  # loose: only that the reply waited for the latency


async def test_a_retry_while_pending_is_answered_once_the_network_replies(world: World) -> None:
    bus, simulator = world
    simulator.configure(latency_ms=500)
    first = await bus.send(activate("saga-3/activate/action"), ACTIVATION_COMMANDS)
    retried = await bus.send(retry_of(first), ACTIVATION_COMMANDS)
    reply = await bus.reply_to(retried)
    await bus.settle(0.3)

    assert reply.event_type == "ServiceActivated"
    assert bus.replies_to(first) == []  # the saga waits for the latest attempt only
    assert len(await simulator.configuration("SO-1")) == 2


async def test_injected_transient_failure_configures_nothing_and_a_retry_runs_again(world: World) -> None:
    bus, simulator = world
    simulator.configure(fail_orders=["SO-1"], fail_steps=["svc-internet"])
    sent = await bus.send(activate("saga-4/activate/action"), ACTIVATION_COMMANDS)
    failed = await bus.reply_to(sent)

    assert failed.event_type == "ServiceActivationFailed"
    assert failed.payload["permanent"] is False
    assert failed.payload["failedStep"]["target"] == "svc-internet"
    assert await states(simulator) == []

    simulator.configure(fail_orders=[], fail_steps=[])  # fail_steps alone would fail every order
    retried = await bus.reply_to(await bus.send(retry_of(sent), ACTIVATION_COMMANDS))
    assert retried.event_type == "ServiceActivated"


async def test_a_permanent_failure_is_replayed_to_a_retry(world: World) -> None:
    bus, simulator = world
    simulator.configure(failure_rate=1.0, failure_mode="permanent")
    sent = await bus.send(activate("saga-5/activate/action"), ACTIVATION_COMMANDS)
    failed = await bus.reply_to(sent)
    simulator.configure(failure_rate=0.0)
    again = await bus.reply_to(await bus.send(retry_of(sent), ACTIVATION_COMMANDS))

    assert failed.payload["permanent"] is True
    assert again.event_type == "ServiceActivationFailed" and again.payload == failed.payload


async def test_rollback_undoes_the_configuration_idempotently(world: World) -> None:
    bus, simulator = world
    await bus.reply_to(await bus.send(activate("saga-6/activate"), ACTIVATION_COMMANDS))
    sent = await bus.send(deactivate("saga-6/deactivate", "saga-6/activate"), ACTIVATION_COMMANDS)
    reply = await bus.reply_to(sent)
    again = await bus.reply_to(await bus.send(retry_of(sent), ACTIVATION_COMMANDS))

    assert reply.event_type == "ServiceDeactivated"
    assert [step["element"] for step in reply.payload["rolledBack"]] == ["svc-internet", "svc-access"]
    assert again.payload == reply.payload
    assert await states(simulator) == [("svc-access", "rolledBack"), ("svc-internet", "rolledBack")]


async def test_a_rollback_fault_and_a_rollback_that_overtakes_its_activation(world: World) -> None:
    bus, simulator = world
    simulator.configure(fail_rollback_orders=["SO-1"], failure_mode="permanent")
    await bus.reply_to(await bus.send(activate("saga-7/activate"), ACTIVATION_COMMANDS))
    refused = await bus.reply_to(
        await bus.send(deactivate("saga-7/deactivate", "saga-7/activate"), ACTIVATION_COMMANDS)
    )
    assert refused.event_type == "ServiceDeactivationFailed" and refused.payload["permanent"] is True
    assert await states(simulator) == [("svc-access", "configured"), ("svc-internet", "configured")]

    simulator.configure(fail_rollback_orders=[])
    early = deactivate("saga-8/deactivate", "saga-8/activate", order="SO-2")
    assert (await bus.reply_to(await bus.send(early, ACTIVATION_COMMANDS))).event_type == "ServiceDeactivated"
    late = await bus.reply_to(await bus.send(activate("saga-8/activate", order="SO-2"), ACTIVATION_COMMANDS))
    assert late.event_type == "ServiceActivationFailed" and late.payload["permanent"] is True
    assert await simulator.configuration("SO-2") == []


async def test_a_malformed_command_is_answered_with_a_permanent_failure(world: World) -> None:
    bus, _ = world
    sent = await bus.send(
        command(ACTIVATE_SERVICE, {"requestId": "r", "serviceOrderId": "SO-1"}), ACTIVATION_COMMANDS
    )
    reply = await bus.reply_to(sent)
    assert reply.event_type == "ServiceActivationFailed" and reply.payload["permanent"] is True
    assert "steps" in reply.payload["error"]


async def test_the_operator_endpoint_changes_faults_at_run_time(world: World) -> None:
    _, simulator = world
    app = FastAPI()
    app.include_router(activation_router(simulator))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        changed = await http.put("/activation/faults", json={"failure_rate": 0.5, "fail_orders": ["SO-9"]})
        refused = await http.put("/activation/faults", json={"failure_rate": 2})
        shown = await http.get("/activation/faults")

    assert changed.status_code == 200 and changed.json()["failure_rate"] == 0.5
    assert refused.status_code == 422
    assert shown.json()["fail_orders"] == ["SO-9"]
    assert simulator.settings == ActivationSettings().changed({"failure_rate": 0.5, "fail_orders": ["SO-9"]})
