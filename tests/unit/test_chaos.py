"""The chaos suite's pure parts: cluster sizing, which scenarios may run, the webhook verdict."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from strowger.chaos.faults import Services
from strowger.chaos.runner import SCENARIOS, ChaosOptions, skip_reason
from strowger.chaos.webhook import CREATED, FINISHED, WebhookListener, listener_once
from strowger.cluster.plan import plan_cluster
from strowger.demo.drive import OrderRecord

pytestmark = pytest.mark.unit
URLS = {"database_url": "postgresql://u:p@127.0.0.1:5433/db", "bus_url": "kafka://127.0.0.1:9192"}


def test_scale_sets_the_count_of_one_component_and_singletons_stay_single(tmp_path: Path) -> None:
    plan = plan_cluster(tmp_path, instances=1, scale={"service-ordering": 2, "catalog": 3}, **URLS)

    per_component = Counter(spec.component for spec in plan.processes)
    assert per_component["service-ordering"] == 2
    assert per_component["billing"] == 1
    assert per_component["catalog"] == 1  # a singleton whatever is asked
    assert {spec.name for spec in plan.instances_of("service-ordering")} == {
        "service-ordering-1",
        "service-ordering-2",
    }
    assert len({spec.port for spec in plan.processes}) == len(plan.processes)


def test_scaling_an_unknown_component_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="billingg"):
        plan_cluster(tmp_path, scale={"billingg": 2}, **URLS)


def test_service_restarts_run_on_private_services_and_shared_ones_only_when_allowed() -> None:
    private = ChaosOptions(services=Services("chaos", "chaos"))
    shared = ChaosOptions()
    allowed = ChaosOptions(restart_shared=True)

    assert skip_reason(SCENARIOS["kafka"], private) == ""
    assert skip_reason(SCENARIOS["postgres"], private) == ""
    assert "--restart-shared" in skip_reason(SCENARIOS["kafka"], shared)
    assert skip_reason(SCENARIOS["postgres"], allowed) == ""
    assert skip_reason(SCENARIOS["kill"], shared) == ""
    # the private set has its own RabbitMQ node: restarting it needs no permission
    rabbit = ChaosOptions(bus="rabbitmq", services=Services("chaos", "chaos"))
    assert skip_reason(SCENARIOS["rabbitmq"], rabbit) == ""
    assert "--restart-shared" in skip_reason(SCENARIOS["rabbitmq"], ChaosOptions(bus="rabbitmq"))
    assert "rabbitmq bus" in skip_reason(SCENARIOS["rabbitmq"], private)


def test_the_private_instance_reaches_the_services_script_and_ci_never_resets_the_broker() -> None:
    env = Services("chaos", "chaos").environment()
    assert env["STROWGER_SERVICES_INSTANCE"] == "chaos"
    assert env["CI"] == "false"
    assert "STROWGER_SERVICES_INSTANCE" not in Services().environment()


def received(listener: WebhookListener, path: str, order_id: str, event_id: str, times: int = 1) -> None:
    seen = listener.received[path]
    seen.accepted[event_id] += times
    seen.orders[order_id].add(event_id)


def orders() -> list[OrderRecord]:
    return [
        OrderRecord("PO-A", id="o1", state="completed"),
        OrderRecord("PO-A", id="o2", state="failed"),
        OrderRecord("PO-A", id="o3", state="inProgress"),  # not terminal: no terminal event expected
        OrderRecord("PO-A", error="HTTP 400"),  # never accepted: no event at all
    ]


def listener_with_every_event() -> WebhookListener:
    listener = WebhookListener()
    for order_id in ("o1", "o2", "o3"):
        received(listener, CREATED, order_id, f"create-{order_id}")
    for order_id in ("o1", "o2"):
        received(listener, FINISHED, order_id, f"finish-{order_id}")
    return listener


def test_every_matching_event_once_passes_and_a_redelivery_is_counted_not_doubled() -> None:
    listener = listener_with_every_event()
    received(listener, CREATED, "o1", "create-o1")  # the same eventId again: one effect

    verdict = listener_once(listener, orders())

    assert verdict.ok is True
    assert "created: 3/3 events" in verdict.detail and "1 redelivered" in verdict.detail


@pytest.mark.parametrize(
    ("path", "order_id", "event_id", "problem"),
    [
        (CREATED, "o9", "create-o9", "unexpected orders"),
        (FINISHED, "o1", "finish-o1-again", "several distinct events"),
        (FINISHED, "o3", "finish-o3", "unexpected orders"),
    ],
)
def test_a_foreign_or_second_distinct_event_fails(
    path: str, order_id: str, event_id: str, problem: str
) -> None:
    listener = listener_with_every_event()
    received(listener, path, order_id, event_id)

    verdict = listener_once(listener, orders())

    assert verdict.ok is False
    assert problem in verdict.detail


def test_a_missing_event_fails() -> None:
    listener = listener_with_every_event()
    del listener.received[FINISHED].orders["o2"]

    verdict = listener_once(listener, orders())

    assert verdict.ok is False
    assert "finished: 1 orders never delivered, e.g. o2" in verdict.detail


def test_the_settle_budget_grows_with_the_orders() -> None:
    from strowger.chaos.runner import settle_budget

    assert settle_budget(20) == 300.0  # the CI size keeps its budget
    assert settle_budget(2000) == 2000.0  # the full size: ~1.6 orders/s on 2 cores under faults, with margin
