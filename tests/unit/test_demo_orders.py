"""The demo's order generator and the per-step fault rate that makes a chosen share of orders fail."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from strowger.demo.orders import (
    DEMO_MIX,
    OrderGenerator,
    expected_pooled_resources,
    offering_cost,
    step_failure_rate,
)


def test_offering_costs_come_from_the_catalog_decomposition() -> None:
    assert offering_cost("PO-MOBILE-20").pooled_resources == 2  # MSISDN, IMSI (the APN is configuration)
    assert offering_cost("PO-FIBRE-500").pooled_resources == 4
    assert offering_cost("PO-BUNDLE-FIBRE-MOBILE").pooled_resources == 6
    assert offering_cost("PO-BUNDLE-FIBRE-MOBILE").steps > offering_cost("PO-FIBRE-500").steps
    assert expected_pooled_resources(["PO-MOBILE-20", "PO-STATIC-IP"]) == 3


@pytest.mark.parametrize("target", [0.05, 0.2, 0.5])
def test_the_step_rate_makes_that_share_of_orders_fail(target: float) -> None:
    rate = step_failure_rate(target, DEMO_MIX)
    assert 0 < rate < target  # every order has several steps, so each step fails less often
    rng = random.Random(3)
    generator = OrderGenerator(DEMO_MIX, seed=5)
    trials = 20_000
    failed = 0
    for _ in range(trials):  # the simulator's rule: every step drawn on its own
        steps = offering_cost(generator.offering()).steps
        failed += any(rng.random() < rate for _ in range(steps))
    assert failed / trials == pytest.approx(target, abs=0.015)


def test_no_failure_and_all_failures_are_exact() -> None:
    assert step_failure_rate(0.0) == 0.0
    assert step_failure_rate(1.0) == 1.0
    with pytest.raises(ValueError, match="within"):
        step_failure_rate(1.5)


def test_orders_are_valid_tmf622_bodies_over_the_mix_and_reproducible() -> None:
    orders = [OrderGenerator(seed=11).order() for _ in range(2)]
    assert orders[0] == orders[1]
    generator = OrderGenerator(seed=11)
    bodies = [generator.order() for _ in range(2_000)]
    for body in bodies[:50]:
        (item,) = body["productOrderItem"]
        assert item["action"] == "add" and item["productOffering"]["id"] in DEMO_MIX
        assert body["relatedParty"][0]["role"] == "Customer"
        assert body["billingAccount"]["id"]
    shares = Counter(body["productOrderItem"][0]["productOffering"]["id"] for body in bodies)
    assert shares["PO-MOBILE-20"] / len(bodies) == pytest.approx(DEMO_MIX["PO-MOBILE-20"], abs=0.04)
    assert len({body["relatedParty"][0]["id"] for body in bodies}) > 1_900  # random customers
