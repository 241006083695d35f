"""``strowger chaos``: fault scenarios against a fresh multi-process cluster; exit 1 if an invariant fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.chaos.runner import SCENARIOS, ChaosOptions, ScenarioResult, run_chaos
from strowger.commands.cluster import BUS_URLS, bus_url, database_url

console = Console()


def chaos(
    orders: Annotated[int, typer.Option(help="Orders per scenario")] = 40,
    scenario: Annotated[str, typer.Option(help="A scenario name, or 'all'")] = "all",
    full: Annotated[bool, typer.Option(help="Thousands of orders, 30 s outages, two instances")] = False,
    bus: Annotated[str, typer.Option(help="kafka or rabbitmq")] = "kafka",
    instances: Annotated[int, typer.Option(min=1, max=4)] = 1,
    root: Annotated[Path, typer.Option("--dir")] = Path("var/cluster/chaos"),
    seed: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line")] = False,
) -> None:
    """Run chaos scenarios (kills, broker and database outages, poison, redelivery) and check invariants."""
    if bus not in BUS_URLS:
        raise typer.BadParameter("kafka or rabbitmq", param_hint="--bus")
    names = tuple(SCENARIOS) if scenario == "all" else (scenario,)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise typer.BadParameter("one of: all, " + ", ".join(SCENARIOS), param_hint="--scenario")
    options = ChaosOptions(
        orders=2000 if full else orders,
        scenarios=names,
        bus=bus,
        instances=2 if full else instances,
        root=root,
        outage_seconds=30.0 if full else 10.0,
        seed=seed,
        database_url=database_url(),
        bus_url=bus_url(bus),
    )
    results = asyncio.run(run_chaos(options, lambda line: console.print(line, highlight=False)))
    console.print(report_table(results))
    ok = all(result.ok for result in results)
    if as_json:
        typer.echo(orjson.dumps({"ok": ok, "scenarios": [r.to_json() for r in results]}).decode())
    raise typer.Exit(0 if ok else 1)


def report_table(results: list[ScenarioResult]) -> Table:
    table = Table(title="chaos: invariants per scenario")
    for column in ("scenario", "invariant", "result", "counts"):
        table.add_column(column)
    for result in results:
        if result.skipped:
            table.add_row(result.name, "-", "[yellow]SKIPPED[/]", result.skipped)
            continue
        faults = ", ".join(f"{k}: {v}" for k, v in result.injected.items()) or "none"
        outcomes = ", ".join(f"{k}: {v}" for k, v in result.outcomes.items())
        table.add_row(result.name, "faults injected / outcomes", "", f"{faults} / {outcomes}")
        for invariant in result.invariants:
            verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a"}[invariant.ok]
            table.add_row("", invariant.name, verdict, invariant.detail)
    return table


if __name__ == "__main__":
    typer.run(chaos)
