"""`strowger run <component>` keeps only that component's routers, consumers and tasks."""

from __future__ import annotations

from pathlib import Path

from strowger.bootstrap import bootstrap
from strowger.settings import Settings


def build(tmp_path: Path, component: str) -> tuple[set[str], set[str], set[str]]:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/s.db", component=component))
    tasks = {name for name, _ in platform.tasks}
    runners = {runner.name for runner in platform.runners}
    paths = {getattr(route, "path", "") for router in platform.routers for route in router.routes}
    return tasks, runners, paths


def test_all_runs_everything(tmp_path: Path) -> None:
    tasks, _, paths = build(tmp_path, "all")
    assert {"outbox-relay", "consumer:billing", "consumer:service-ordering", "alert-monitor"} <= tasks
    assert any(path.startswith("/tmf-api/productOrderingManagement/v4") for path in paths)


def test_billing_runs_only_billing(tmp_path: Path) -> None:
    tasks, runners, paths = build(tmp_path, "billing")
    assert tasks == {"consumer:billing"}
    assert runners == {"billing"}
    assert paths and all(path.startswith("/tmf-api/customerBillManagement/v4") for path in paths)


def test_the_relay_runs_only_the_relay(tmp_path: Path) -> None:
    tasks, runners, paths = build(tmp_path, "relay")
    assert tasks == {"outbox-relay"}
    assert not runners and not paths
