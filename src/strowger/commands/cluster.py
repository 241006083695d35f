"""``strowger cluster up|down|status``: the platform as one process per component instance, locally.

Against PostgreSQL and Kafka (or RabbitMQ); each cluster gets a bus namespace and each of
its components a fresh schema and role (docs/operations.md, "Database layout"), so clusters and
test runs never see each other. ``scripts/cluster`` wraps it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.cluster.plan import ClusterPlan, plan_cluster
from strowger.cluster.supervisor import (
    READY_TIMEOUT,
    STOP_TIMEOUT,
    Cluster,
    ClusterError,
    ProcessStatus,
    state_summary,
)

cluster_app = typer.Typer(
    name="cluster", help="Run the platform as a multi-process cluster on this machine.", no_args_is_help=True
)
console = Console()

DEFAULT_ROOT = Path("var/cluster")
DEFAULT_DATABASE = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
BUS_URLS = {"kafka": "kafka://127.0.0.1:9092", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/"}
BusChoice = Literal["kafka", "rabbitmq"]
RootOption = Annotated[Path, typer.Option("--dir", help="Where the state file and the logs go")]


def database_url() -> str:
    """STROWGER_DATABASE_URL when it names PostgreSQL, else the local development server."""
    url = os.environ.get("STROWGER_DATABASE_URL", "")
    return url if url.startswith(("postgresql://", "postgres://")) else DEFAULT_DATABASE


def bus_url(bus: str) -> str:
    url = os.environ.get("STROWGER_BUS_URL", "")
    wanted = "kafka://" if bus == "kafka" else "amqp"
    return url if url.startswith(wanted) else BUS_URLS[bus]


@cluster_app.command()
def up(
    instances: Annotated[int, typer.Option(min=1, max=4, help="Instances of each scalable component")] = 2,
    bus: Annotated[str, typer.Option(help="kafka or rabbitmq")] = "kafka",
    root: RootOption = DEFAULT_ROOT,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every /ready")] = READY_TIMEOUT,
) -> None:
    """Start every component in its own process and wait until all are ready."""
    if bus not in BUS_URLS:
        raise typer.BadParameter("kafka or rabbitmq", param_hint="--bus")
    if _running(root):
        console.print(f"a cluster is already running from {root}: `strowger cluster down` first")
        raise typer.Exit(1)
    plan = plan_cluster(root, database_url=database_url(), bus_url=bus_url(bus), instances=instances)
    cluster = Cluster(plan)
    console.print(
        f"starting {len(plan.processes)} processes: schema [bold]{plan.database_schema}[/], "
        f"bus namespace [bold]{plan.bus_namespace}[/] on {bus}",
        highlight=False,
    )
    try:
        asyncio.run(cluster.up(timeout))
    except ClusterError as exc:
        console.print(f"[red]{exc}[/]; stopping what started")
        asyncio.run(cluster.down())
        raise typer.Exit(1) from None
    _print_status(cluster)
    console.print(f"admin API key (X-API-Key): [bold]{cluster.admin_key}[/]", highlight=False)


@cluster_app.command()
def gateway(root: RootOption = DEFAULT_ROOT) -> None:
    """Serve the cluster's one HTTP entry point (started by `cluster up`): each path to its component."""
    import uvicorn

    from strowger.cluster.gateway import create_gateway

    plan = _load(root).plan
    if plan.gateway is None:
        console.print("this cluster's plan has no gateway")
        raise typer.Exit(1)
    instances: dict[str, list[str]] = {}
    for spec in plan.processes:
        instances.setdefault(spec.component, []).append(f"http://127.0.0.1:{spec.port}")
    app = create_gateway(instances)
    uvicorn.run(app, host="127.0.0.1", port=plan.gateway.port, log_level="warning", access_log=False)


@cluster_app.command()
def status(
    root: RootOption = DEFAULT_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
) -> None:
    """Every process: component, pid, port, alive, ready."""
    cluster = _load(root)
    if as_json:
        rows = asyncio.run(cluster.status())
        typer.echo(orjson.dumps(_json(rows, cluster.gateway_url)).decode())
        return
    _print_status(cluster)


@cluster_app.command()
def down(
    root: RootOption = DEFAULT_ROOT,
    timeout: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL")] = STOP_TIMEOUT,
    keep_data: Annotated[bool, typer.Option(help="Keep the schema and topics")] = False,
) -> None:
    """Stop every process (SIGTERM, drain, then SIGKILL) and drop the cluster's schema and topics."""
    cluster = _load(root)
    killed = asyncio.run(cluster.down(timeout, drop=not keep_data))
    stopped = len(cluster.every_process())
    console.print(f"stopped {stopped} processes" + (f"; SIGKILLed {', '.join(killed)}" if killed else ""))


COMPONENT_URL = "STROWGER_DATABASE_URL_"  # + the component's name in upper case, '-' as '_'


@cluster_app.command()
def provision(
    prefix: Annotated[str, typer.Option(help="Schemas <prefix>_<schema>, roles <prefix>_<role>")] = "bss",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: every schema and role")] = False,
) -> None:
    """Create or update a deployment's per-component schemas, roles and grants (Kubernetes Job).

    Connects as STROWGER_DATABASE_URL (an admin that may create roles and schemas); each
    component's own URL comes from STROWGER_DATABASE_URL_<COMPONENT> (its Secret) and must log
    in as its role. Idempotent, never drops anything: run it before the components start and
    again after they have (it then also builds the directory's views over their tables)."""
    from strowger.cluster.plan import deployment_plan
    from strowger.cluster.provision import ProvisionError, provision_deployment, role_of, schema_map

    admin = os.environ.get("STROWGER_DATABASE_URL", "")
    if not admin.startswith(("postgresql://", "postgres://")):
        console.print("STROWGER_DATABASE_URL must name the PostgreSQL server (as an admin role)")
        raise typer.Exit(2)
    try:
        plan = deployment_plan(admin, prefix)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prefix") from None
    urls = {name: os.environ.get(COMPONENT_URL + name.upper().replace("-", "_"), "") for name in _names(plan)}
    try:
        asyncio.run(provision_deployment(plan, urls))
    except ProvisionError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    schemas = schema_map(plan)
    roles = {name: role_of(plan, name) for name in _names(plan)}
    if as_json:
        print(orjson.dumps({"schemas": schemas, "roles": roles}).decode())
        return
    table = Table("component", "role", "schema")
    for name in _names(plan):
        table.add_row(name, roles[name], schemas[name])
    console.print(table)
    line = f"STROWGER_DATABASE_SCHEMAS={orjson.dumps(schemas).decode()}"
    console.print(line, highlight=False, soft_wrap=True)


def _names(plan: ClusterPlan) -> list[str]:
    return list(dict.fromkeys(spec.component for spec in plan.processes))


def _running(root: Path) -> bool:
    if not (root / "cluster.json").exists():
        return False
    existing = Cluster.load(root)
    return any(existing.alive(name) for name in existing.pids)


def _load(root: Path) -> Cluster:
    try:
        return Cluster.load(root)
    except ClusterError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from None


def _json(rows: list[ProcessStatus], gateway_url: str | None) -> dict[str, object]:
    return {"processes": [asdict(row) for row in rows], "gateway": gateway_url}


def _print_status(cluster: Cluster) -> None:
    rows = asyncio.run(cluster.status())
    table = Table(title=f"cluster {cluster.plan.cluster_id} ({cluster.plan.bus})")
    for column in ("process", "component", "pid", "port", "alive", "ready"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            row.component,
            str(row.pid or "-"),
            str(row.port),
            "yes" if row.alive else "[red]no[/]",
            "yes" if row.ready else "[red]no[/]",
        )
    console.print(table)
    summary = state_summary(rows)
    console.print(f"{summary['ready']}/{summary['processes']} ready", highlight=False)
    if cluster.gateway_url:
        console.print(f"entry point (gateway): [bold]{cluster.gateway_url}[/]", highlight=False)


if __name__ == "__main__":
    cluster_app()
