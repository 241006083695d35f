"""The saga fault matrix: every saga, a failure injected at every step and every compensation.

For each saga type in :func:`verifiable_sagas` (the registry of verifiable sagas: its
definition and how to start one through the public API), the scenarios are
derived from the definition itself, so a new step is covered without editing
this module:

* ``happy``: nothing injected (one per sample product for the fulfilment saga);
* ``<step>: action fails``: the step's command is refused permanently;
* ``<step>: action times out``: the step's command is never answered (every attempt);
* ``<step>: compensation fails``: a later failure makes the saga undo ``<step>``,
  whose compensation is refused until the saga is quarantined; the fault is then
  cleared and an operator retries (``POST /sagas/{id}/retry``): it must end compensated.

All scenarios run at once on one real platform (their orders are independent:
faults target one service order each), then :mod:`strowger.verify.invariants`
checks what must hold whatever failed.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from strowger.components import contract
from strowger.components.faults import CommandFaults
from strowger.components.service_ordering.saga import SAGA_TYPE, FulfilmentTimings, fulfilment_saga
from strowger.components.service_ordering.service import service_order_id_for
from strowger.events.envelope import new_id
from strowger.ops.tracing import CORRELATION_HEADER
from strowger.saga import SagaDefinition

ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"
ACTIVATION_FAULTS = "/activation/faults"
TERMINAL = {"completed", "failed", "cancelled", "aborted"}


class Point(enum.StrEnum):
    NONE = "happy"
    ACTION_FAILS = "action fails"
    ACTION_TIMES_OUT = "action times out"
    COMPENSATION_FAILS = "compensation fails"


@dataclass(frozen=True)
class Injection:
    """Where a scenario breaks the saga: a point on a step (``step`` empty for the happy path)."""

    point: Point = Point.NONE
    step: str = ""
    variant: str = ""  # e.g. the product of a happy path

    @property
    def label(self) -> str:
        if self.point is Point.NONE:
            return f"happy ({self.variant})" if self.variant else "happy"
        return f"{self.step}: {self.point.value}"


@dataclass
class Outcome:
    """What one scenario did; ``problems`` lists every way it differs from what was expected."""

    saga_type: str
    injection: Injection
    saga_id: str = ""
    order_id: str = ""
    status: str = "not started"
    quarantined: bool = False
    steps: dict[str, str] = field(default_factory=dict)
    expected: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def as_expected(self) -> bool:
        return not self.problems


class SagaUnderTest(Protocol):
    """A saga type the matrix can drive: its definition and how to start and follow one instance."""

    saga_type: str

    def definition(self, timings: FulfilmentTimings) -> SagaDefinition: ...

    def variants(self) -> Sequence[str]: ...

    async def start(self, client: httpx.AsyncClient, variant: str, correlation_id: str) -> tuple[str, str]:
        """Start one instance under ``correlation_id`` (its faults are armed for it); (saga id, order id)."""
        ...


# -- the fulfilment saga ----------------------------------------------------------------------------


class FulfilmentSaga:
    """SOM's fulfilment saga, started by placing a TMF622 product order for a sample offering."""

    saga_type = SAGA_TYPE
    offerings = ("PO-FIBRE-500", "PO-MOBILE-20", "PO-BUNDLE-FIBRE-MOBILE")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def definition(self, timings: FulfilmentTimings) -> SagaDefinition:
        return fulfilment_saga(timings)

    def variants(self) -> Sequence[str]:
        return self.offerings

    async def start(self, client: httpx.AsyncClient, variant: str, correlation_id: str) -> tuple[str, str]:
        body = {
            "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": variant}}],
            "relatedParty": [{"id": "CUST-VERIFY", "role": "Customer", "@referredType": "Individual"}],
            "billingAccount": {"id": "BA-VERIFY"},
        }
        headers = {**self.headers, CORRELATION_HEADER: correlation_id}
        created = await client.post(ORDERS, json=body, headers=headers)
        if created.status_code != 201:
            raise RuntimeError(f"product order refused: {created.status_code} {created.text}")
        order_id = str(created.json()["id"])
        return service_order_id_for(order_id), order_id


def verifiable_sagas(headers: dict[str, str]) -> list[SagaUnderTest]:
    """The registry of saga types the matrix verifies (add a driver here with each new saga type)."""
    return [FulfilmentSaga(headers)]


# -- scenarios --------------------------------------------------------------------------------------


def command_of(reply_type: str) -> str:
    """The contract command a step's call sends, found by the reply that settles it."""
    for kind in contract.ALL_COMMANDS:
        if reply_type in (kind.succeeded, kind.failed):
            return kind.name
    raise LookupError(f"no contract command is answered by {reply_type!r}")


def injections(definition: SagaDefinition, variants: Sequence[str]) -> list[Injection]:
    """Every injection point of ``definition``: happy paths, each step's action, each compensation."""
    points = [Injection(Point.NONE, variant=variant) for variant in variants]
    for step in definition.steps:
        points.append(Injection(Point.ACTION_FAILS, step.name))
        points.append(Injection(Point.ACTION_TIMES_OUT, step.name))
    points.extend(
        Injection(Point.COMPENSATION_FAILS, step.name) for step in definition.steps if step.compensation
    )
    return points


@dataclass(frozen=True)
class Plan:
    """The faults a scenario arms and the step statuses it must end with."""

    faults: list[tuple[str, str, int]]  # (command type, mode, times) on the scenario's order
    compensation_fault: str = ""  # command type refused until quarantine, then cleared
    expected_status: str = "completed"
    expected_steps: dict[str, str] = field(default_factory=dict)


def plan(definition: SagaDefinition, injection: Injection, attempts: int) -> Plan:
    """What to arm for ``injection`` and what every step must end as."""
    names = [step.name for step in definition.steps]
    if injection.point is Point.NONE:
        return Plan([], expected_steps=dict.fromkeys(names, "succeeded"))
    index = names.index(injection.step)
    if injection.point is Point.COMPENSATION_FAILS:
        # Undo this step: fail the next step's action, or time this (last) step out.
        if index + 1 < len(names):
            trigger = plan(definition, Injection(Point.ACTION_FAILS, names[index + 1]), attempts)
        else:
            trigger = plan(definition, Injection(Point.ACTION_TIMES_OUT, injection.step), attempts)
        compensation = definition.steps[index].compensation
        assert compensation is not None
        return Plan(
            trigger.faults,
            compensation_fault=command_of(compensation.succeeded),
            expected_status="failed",
            expected_steps=trigger.expected_steps,
        )
    action = command_of(definition.steps[index].action.succeeded)
    undone = index if injection.point is Point.ACTION_FAILS else index + 1
    steps = {name: "compensated" for name in names[:undone]}
    if injection.point is Point.ACTION_FAILS:
        steps[injection.step] = "failed"
        faults = [(action, "fail", 1)]
    else:
        faults = [(action, "drop", attempts)]
    steps.update({name: "pending" for name in names[index + 1 :]})
    return Plan(faults, expected_status="failed", expected_steps=steps)


# -- running ----------------------------------------------------------------------------------------


class FaultPanel:
    """Arms faults the way an operator would: the activation simulator's own endpoint for a refused
    activation, the general command hook (:mod:`strowger.components.faults`) for everything else.

    A refused rollback goes through the general hook too: the simulator replays a permanent
    failure to every retry of the same request (that is its idempotency), so a rollback it
    refused could never succeed on the operator's retry.
    """

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], faults: CommandFaults) -> None:
        self.client = client
        self.headers = headers
        self.faults = faults
        self.fail_orders: set[str] = set()
        self._lock = asyncio.Lock()

    async def arm(self, command: str, order: str, *, mode: str, times: int, permanent: bool = True) -> None:
        if mode == "fail" and permanent and command == contract.ACTIVATE_SERVICE.name:
            async with self._lock:
                self.fail_orders.add(order)
                await self._put()
            return
        drop = mode == "drop"
        self.faults.arm(
            command, times=times, mode="drop" if drop else "fail", order=order, permanent=permanent
        )

    async def clear(self, order: str) -> None:
        self.faults.clear(order=order)
        async with self._lock:
            if order in self.fail_orders:
                self.fail_orders.discard(order)
                await self._put()

    async def _put(self) -> None:
        body = {"failure_mode": "permanent", "fail_orders": sorted(self.fail_orders)}
        answer = await self.client.put(ACTIVATION_FAULTS, json=body, headers=self.headers)
        if answer.status_code != 200:
            raise RuntimeError(f"activation faults refused: {answer.status_code} {answer.text}")


async def saga_of(client: httpx.AsyncClient, headers: dict[str, str], saga_id: str) -> dict[str, Any]:
    answer = await client.get(f"/sagas/{saga_id}", headers=headers)
    return answer.json() if answer.status_code == 200 else {}


async def wait_saga(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    saga_id: str,
    statuses: set[str],
    deadline: float,
) -> dict[str, Any]:
    saga: dict[str, Any] = {}
    while time.monotonic() < deadline:
        saga = await saga_of(client, headers, saga_id)
        if saga.get("status") in statuses:
            return saga
        await asyncio.sleep(0.2)
    return saga


async def run_scenario(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    panel: FaultPanel,
    subject: SagaUnderTest,
    definition: SagaDefinition,
    injection: Injection,
    timings: FulfilmentTimings,
    budget: float,
) -> Outcome:
    """Start one saga with its faults armed, operate it if it quarantines, and record how it ended."""
    outcome = Outcome(subject.saga_type, injection)
    began = time.monotonic()
    deadline = began + budget
    attempts = timings.compensation_retry.max_attempts
    scenario = plan(definition, injection, timings.action_retry.max_attempts)
    outcome.expected = scenario.expected_status
    variant = injection.variant or subject.variants()[0]
    # Faults are armed for the order's correlationId BEFORE the order is placed: armed after,
    # a fast chain could run the faulty step first (the order id is only known once placed).
    correlation_id = f"verify-{new_id()}"
    try:
        for command, mode, times in scenario.faults:
            await panel.arm(command, correlation_id, mode=mode, times=times)
        if scenario.compensation_fault:
            # Refused (not permanently) more often than the retry policy allows: quarantine.
            await panel.arm(
                scenario.compensation_fault, correlation_id, mode="fail", times=attempts + 1, permanent=False
            )
        outcome.saga_id, outcome.order_id = await subject.start(client, variant, correlation_id)
        if scenario.compensation_fault:
            await _quarantine_then_retry(client, headers, panel, outcome, deadline, correlation_id)
        saga = await wait_saga(client, headers, outcome.saga_id, TERMINAL, deadline)
        outcome.status = str(saga.get("status", "missing"))
        outcome.steps = {step["name"]: step["status"] for step in saga.get("steps", ())}
    except Exception as error:  # a broken scenario is a result to report, not a crash of the matrix
        outcome.problems.append(f"scenario error: {error!r}")
    finally:
        await panel.clear(correlation_id)
    if outcome.status != scenario.expected_status:
        outcome.problems.append(f"saga {outcome.status}, expected {scenario.expected_status}")
    if outcome.steps and outcome.steps != scenario.expected_steps:
        outcome.problems.append(f"steps {outcome.steps}, expected {scenario.expected_steps}")
    outcome.seconds = time.monotonic() - began
    return outcome


async def _quarantine_then_retry(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    panel: FaultPanel,
    outcome: Outcome,
    deadline: float,
    correlation_id: str,
) -> None:
    saga = await wait_saga(client, headers, outcome.saga_id, {"quarantined", *TERMINAL}, deadline)
    if saga.get("status") != "quarantined":
        outcome.problems.append(f"never quarantined (saga {saga.get('status')})")
        return
    outcome.quarantined = True
    stuck: dict[str, Any] = next(
        (s for s in saga.get("steps", ()) if s["name"] == saga.get("currentStep")), {}
    )
    if not saga.get("data") or not stuck.get("errors") or not saga.get("reason"):
        outcome.problems.append("quarantined without its context (data, reason, errors of the stuck step)")
    await panel.clear(correlation_id)
    answer = await client.post(
        f"/sagas/{outcome.saga_id}/retry", json={"reason": "verify: fault cleared"}, headers=headers
    )
    if answer.status_code != 200:
        outcome.problems.append(f"operator retry refused: {answer.status_code} {answer.text}")


Progress = Callable[[Outcome], Awaitable[None] | None]


async def run_matrix(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    faults: CommandFaults,
    timings: FulfilmentTimings,
    *,
    budget: float = 90.0,
    sagas: Sequence[SagaUnderTest] | None = None,
) -> list[Outcome]:
    """Every scenario of every saga, concurrently; their outcomes in matrix order."""
    panel = FaultPanel(client, headers, faults)
    jobs = []
    for subject in sagas if sagas is not None else verifiable_sagas(headers):
        definition = subject.definition(timings)
        for injection in injections(definition, subject.variants()):
            jobs.append(run_scenario(client, headers, panel, subject, definition, injection, timings, budget))
    return list(await asyncio.gather(*jobs))
