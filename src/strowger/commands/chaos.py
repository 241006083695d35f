"""``strowger chaos``: fault scenarios against a fresh multi-process cluster; exit 1 if an invariant fails."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.commands.cluster import BUS_URLS, bus_url, database_url

if TYPE_CHECKING:  # the suite itself is imported when it runs: `strowger run` never pays for it
    from strowger.chaos.runner import ChaosRun

console = Console()

CI_ORDERS, FULL_ORDERS = 20, 2000
CI_SCALE = {"service-ordering": 2}  # one consumer group with two members: a killed SOM fails over
PRIVATE_INSTANCE = "chaos"


def private_urls(bus: str) -> tuple[str, str]:
    """Where ``scripts/services`` puts the private instance (same variables, same defaults)."""
    pg_port = os.environ.get("STROWGER_SERVICES_PG_PORT", "5433")
    kafka_port = os.environ.get("STROWGER_SERVICES_KAFKA_PORT", "9192")
    rabbitmq_port = os.environ.get("STROWGER_SERVICES_RABBITMQ_PORT", "5673")
    database = f"postgresql://strowger:strowger@127.0.0.1:{pg_port}/strowger"
    if bus == "kafka":
        return database, f"kafka://127.0.0.1:{kafka_port}"
    return database, f"amqp://guest:guest@127.0.0.1:{rabbitmq_port}/"


def chaos(
    orders: Annotated[
        int | None, typer.Option(min=1, help=f"Orders per scenario [{CI_ORDERS}; --full {FULL_ORDERS}]")
    ] = None,
    scenario: Annotated[
        str, typer.Option(help="A scenario name, a comma list, or 'all' (without --full: not kafka)")
    ] = "all",
    full: Annotated[
        bool, typer.Option(help="Full size: thousands of orders, 30 s outages, two of each")
    ] = False,
    bus: Annotated[str, typer.Option(help="kafka or rabbitmq")] = "kafka",
    services: Annotated[
        str,
        typer.Option(help="own: a private PostgreSQL and Kafka (scripts/services), shared: the machine's"),
    ] = "own",
    restart_shared: Annotated[
        bool, typer.Option(help="Let the broker/database scenarios stop SHARED services (others' too)")
    ] = False,
    root: Annotated[Path, typer.Option("--dir")] = Path("var/cluster/chaos"),
    seed: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line")] = False,
) -> None:
    """Run chaos scenarios (kills, outages, failing webhooks, poison, redelivery) and check invariants.

    Default: the reduced size CI runs (docs/chaos.md); --full: the issue's size.
    """
    from strowger.chaos.faults import Services
    from strowger.chaos.runner import SCENARIOS, ChaosOptions, run_chaos

    if bus not in BUS_URLS:
        raise typer.BadParameter("kafka or rabbitmq", param_hint="--bus")
    if services not in ("own", "shared"):
        raise typer.BadParameter("own or shared", param_hint="--services")
    if scenario == "all":  # the reduced size leaves out what restarts most processes
        names = tuple(name for name, entry in SCENARIOS.items() if full or not entry.full_only)
    else:
        names = tuple(name.strip() for name in scenario.split(",") if name.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise typer.BadParameter("one of: all, " + ", ".join(SCENARIOS), param_hint="--scenario")
    own = services == "own"
    database, broker = private_urls(bus) if own else (database_url(), bus_url(bus))
    options = ChaosOptions(
        orders=orders or (FULL_ORDERS if full else CI_ORDERS),
        scenarios=names,
        bus=bus,
        instances=2 if full else 1,
        scale={} if full else CI_SCALE,
        root=root,
        outage_seconds=30.0 if full else 8.0,
        seed=seed,
        database_url=database,
        bus_url=broker,
        services=Services(PRIVATE_INSTANCE, PRIVATE_INSTANCE) if own else Services(),
        restart_shared=restart_shared,
    )
    run = asyncio.run(run_chaos(options, lambda line: console.print(line, highlight=False)))
    console.print(report_table(run))
    if as_json:
        typer.echo(orjson.dumps(run.to_json()).decode())
    raise typer.Exit(0 if run.ok else 1)


def report_table(run: ChaosRun) -> Table:
    title = (
        f"chaos: {run.processes} processes (ready in {run.startup_seconds:.0f} s), invariants per scenario"
    )
    table = Table(title=title)
    for column in ("scenario", "invariant", "result", "counts"):
        table.add_column(column)
    for result in run.results:
        if result.skipped:
            table.add_row(result.name, "-", "[yellow]SKIPPED[/]", result.skipped)
            continue
        faults = ", ".join(f"{k}: {v}" for k, v in result.injected.items()) or "none"
        outcomes = ", ".join(f"{k}: {v}" for k, v in result.outcomes.items())
        table.add_row(result.name, "faults injected / outcomes", "", f"{faults} / {outcomes}")
        if result.failed_because:  # the three commonest reasons: a failure nobody can explain is a bug
            reasons = "; ".join(f"{count}: {why}" for why, count in list(result.failed_because.items())[:3])
            table.add_row("", "failed orders, by reason", "", reasons)
        for invariant in result.invariants:
            verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a"}[invariant.ok]
            table.add_row("", invariant.name, verdict, invariant.detail)
    return table


if __name__ == "__main__":
    typer.run(chaos)
