"""What must hold after the fault matrix, whatever failed: checked on the platform's own stores.

* ``no leak``: every pool value held belongs to a completed saga's allocation,
  and a completed saga holds exactly what it was allocated;
* ``billing``: a failed order is charged nothing net; a completed one is charged;
* ``inventory``: no active service nor reserved resource for a failed order;
  every service of a completed order is active;
* ``network``: nothing stays configured on the network for a failed order;
* ``terminal``: every saga ended (or waits in quarantine, which the matrix
  resolves), and its product order says the same.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from strowger.bootstrap import Platform
from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.charging import BillingLedger
from strowger.verify.matrix import ORDERS, Outcome, saga_of

SERVICES = "/tmf-api/serviceInventory/v4/service"
RESOURCES = "/tmf-api/resourceInventory/v4/resource"
INVARIANTS = ("no leak", "billing", "inventory", "network", "terminal")
_ORDER_STATES = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}


@dataclass
class Verdict:
    """Per invariant: the problems found for one scenario (empty: the invariant holds)."""

    problems: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in INVARIANTS})

    def holds(self, invariant: str) -> bool:
        return not self.problems[invariant]

    @property
    def ok(self) -> bool:
        return all(not found for found in self.problems.values())


async def held_by_saga(platform: Platform) -> Counter[str]:
    """Pool values held, counted by the saga whose allocation claimed them (``<saga>/<step>/...``)."""
    rows = await platform.database.fetchall(
        "SELECT request_id FROM resource_pool_slot WHERE request_id IS NOT NULL"
    )
    return Counter(str(row[0]).split("/", 1)[0] for row in rows)


async def check(
    platform: Platform,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    outcomes: Sequence[Outcome],
    *,
    settle: float = 15.0,
) -> list[Verdict]:
    """A verdict per outcome; waits up to ``settle`` seconds for choreography (billing) to catch up."""
    deadline = time.monotonic() + settle
    verdicts = []
    held = await held_by_saga(platform)
    ledger = BillingLedger(platform.database, CustomerBilling(platform.database, platform.sink("verify")))
    for outcome in outcomes:
        verdict = Verdict()
        saga = await saga_of(client, headers, outcome.saga_id) if outcome.saga_id else {}
        await _terminal(client, headers, outcome, saga, verdict, deadline)
        _leak(outcome, saga, held, verdict)
        await _billing(ledger, outcome, verdict, deadline)
        await _inventory(client, headers, outcome, saga, verdict)
        await _network(client, headers, outcome, verdict)
        verdicts.append(verdict)
    strays = set(held) - {outcome.saga_id for outcome in outcomes}
    if strays and verdicts:
        verdicts[0].problems["no leak"].append(f"values held by no verified saga: {sorted(strays)}")
    return verdicts


async def _terminal(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    outcome: Outcome,
    saga: dict[str, Any],
    verdict: Verdict,
    deadline: float,
) -> None:
    status = saga.get("status")
    if status not in ("completed", "failed", "cancelled", "aborted"):
        verdict.problems["terminal"].append(f"saga is {status}")
        return
    expected = _ORDER_STATES.get(str(status))
    state = None
    while outcome.order_id and expected and time.monotonic() < deadline:
        state = (await client.get(f"{ORDERS}/{outcome.order_id}", headers=headers)).json().get("state")
        if state == expected:
            return
        await asyncio.sleep(0.2)
    if expected:
        verdict.problems["terminal"].append(f"product order {state}, saga {status}")


def _leak(outcome: Outcome, saga: dict[str, Any], held: Counter[str], verdict: Verdict) -> None:
    holding = held.get(outcome.saga_id, 0)
    if saga.get("status") == "completed":
        allocate = _step(saga, "allocate")
        allocated = len((allocate.get("result") or {}).get("allocations") or ())
        if holding != allocated:
            verdict.problems["no leak"].append(f"holds {holding} pool values, allocated {allocated}")
    elif holding:
        verdict.problems["no leak"].append(f"{saga.get('status')} saga still holds {holding} pool values")


def _step(saga: dict[str, Any], name: str) -> dict[str, Any]:
    for step in saga.get("steps", ()):
        if step.get("name") == name:
            return dict(step)
    return {}


async def _billing(ledger: BillingLedger, outcome: Outcome, verdict: Verdict, deadline: float) -> None:
    if not outcome.order_id:
        return
    net = await ledger.charges_minus_credits(outcome.order_id)
    if outcome.status == "completed":
        while not net and time.monotonic() < deadline:  # billing charges by choreography, a moment later
            await asyncio.sleep(0.2)
            net = await ledger.charges_minus_credits(outcome.order_id)
        if not net > 0:
            verdict.problems["billing"].append(f"completed order charged {net}")
    elif net != 0:
        verdict.problems["billing"].append(f"{outcome.status} order charged {net} net")


async def _inventory(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    outcome: Outcome,
    saga: dict[str, Any],
    verdict: Verdict,
) -> None:
    data = saga.get("data") or {}
    completed = saga.get("status") == "completed"
    for service in data.get("services", ()):
        found = await client.get(f"{SERVICES}/{service['id']}", headers=headers)
        state = found.json().get("state") if found.status_code == 200 else None
        if completed and service.get("action") == "add" and state != "active":
            verdict.problems["inventory"].append(f"service {service['id']} is {state} for a completed order")
        if not completed and state == "active":
            verdict.problems["inventory"].append(
                f"service {service['id']} active for a {saga.get('status')} order"
            )
    if completed:
        return
    allocate = _step(saga, "allocate")
    for allocation in (allocate.get("result") or {}).get("allocations") or ():
        resource_id = str(allocation.get("id") or f"{allocation.get('pool')}/{allocation.get('value')}")
        found = await client.get(f"{RESOURCES}/{resource_id}", headers=headers)
        status = found.json().get("resourceStatus") if found.status_code == 200 else None
        if status not in (None, "available"):
            verdict.problems["inventory"].append(f"resource {resource_id} {status} for a failed order")


async def _network(
    client: httpx.AsyncClient, headers: dict[str, str], outcome: Outcome, verdict: Verdict
) -> None:
    if not outcome.saga_id or outcome.status == "completed":
        return
    held = (await client.get(f"/activation/config/{outcome.saga_id}", headers=headers)).json()
    configured = [entry["element"] for entry in held if entry.get("state") == "configured"]
    if configured:
        verdict.problems["network"].append(f"still configured for a {outcome.status} order: {configured}")
