"""Demo orders: TMF622 bodies for the sample offerings, and what each one costs the network.

The mix leans on mobile on purpose: the sample catalog has 128 OLT ports (two
OLTs of 64), so a thousand fibre orders would mostly fail on an exhausted pool and
hide the failures the demo injects. With the default mix a 1,000-order run
completes about 100 fibre lines.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from strowger.components.decomposition import decompose
from strowger.components.sample_catalog import sample_catalog

# offering id -> share of the orders
DEMO_MIX: Mapping[str, float] = {
    "PO-MOBILE-20": 0.80,
    "PO-STATIC-IP": 0.10,
    "PO-FIBRE-500": 0.04,
    "PO-FIBRE-1000": 0.02,
    "PO-BUNDLE-FIBRE-MOBILE": 0.04,
}
# The bench repeats one cheap-to-provision offering so any order count fits the pools
# (100,000 MSISDNs and IMSIs); fibre is capped by 128 OLT ports.
BENCH_MIX: Mapping[str, float] = {"PO-MOBILE-20": 1.0}


@dataclass(frozen=True, slots=True)
class OfferingCost:
    """What fulfilling one order of an offering takes: activation steps and pooled resources."""

    steps: int
    pooled_resources: int


@cache
def offering_cost(offering_id: str) -> OfferingCost:
    """From the catalog-driven decomposition, the same one SOM runs."""
    plan = decompose(_item(offering_id), sample_catalog())
    pooled = sum(1 for resource in plan.resources if resource.pool_type is not None)
    return OfferingCost(steps=len(plan.steps), pooled_resources=pooled)


def _item(offering_id: str) -> dict[str, Any]:
    return {"id": "1", "action": "add", "productOffering": {"id": offering_id}}


class OrderGenerator:
    """Random product orders over a mix of offerings, for random customers (seeded: reproducible)."""

    def __init__(self, mix: Mapping[str, float] = DEMO_MIX, seed: int | None = None) -> None:
        self.mix = dict(mix)
        self._offerings = list(self.mix)
        self._weights = [self.mix[offering] for offering in self._offerings]
        self._rng = random.Random(seed)  # a workload, not a secret

    def offering(self) -> str:
        return self._rng.choices(self._offerings, self._weights)[0]

    def order(self) -> dict[str, Any]:
        """A TMF622 ProductOrder create body: one ``add`` item, a customer and a billing account."""
        customer = f"CUST-{self._rng.randrange(1, 1_000_000):06d}"
        return {
            "category": "demo",
            "productOrderItem": [_item(self.offering())],
            "relatedParty": [{"id": customer, "role": "Customer", "@referredType": "Individual"}],
            "billingAccount": {"id": f"BA-{customer[5:]}", "@referredType": "BillingAccount"},
        }


def step_failure_rate(order_failure_rate: float, mix: Mapping[str, float] = DEMO_MIX) -> float:
    """The per-step rate for the activation simulator so that ~``order_failure_rate`` of orders fail.

    The simulator draws each activation step on its own, so an order of ``k`` steps
    fails with ``1 - (1 - r)^k``; this solves the mix-weighted mean of that for ``r``.
    """
    if not 0.0 <= order_failure_rate <= 1.0:
        raise ValueError(f"failure rate {order_failure_rate} is not within [0, 1]")
    if order_failure_rate in (0.0, 1.0):
        return order_failure_rate
    shares = _normalised(mix)
    steps = [(share, offering_cost(offering).steps) for offering, share in shares.items()]

    def expected(rate: float) -> float:
        return sum(share * (1.0 - (1.0 - rate) ** count) for share, count in steps)

    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: expected() increases with the rate
        middle = (low + high) / 2
        low, high = (middle, high) if expected(middle) < order_failure_rate else (low, middle)
    return (low + high) / 2


def _normalised(mix: Mapping[str, float]) -> dict[str, float]:
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("the offering mix has no weight")
    return {offering: share / total for offering, share in mix.items()}


def expected_pooled_resources(offerings: Sequence[str]) -> int:
    """How many pool values the completed orders of these offerings hold."""
    return sum(offering_cost(offering).pooled_resources for offering in offerings)
