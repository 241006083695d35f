"""`strowger bench …`: each prints a readable table and, with --json, one JSON object as its last line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from strowger.bench.machine import machine_info

bench_app = typer.Typer(help="Benchmarks: Strowger and a peer measured side by side in the same run.")
console = Console()

ProgressCallback = Callable[[str, float], None]


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def run_with_progress(work: Callable[[ProgressCallback], Any], total: float = 1.0) -> Any:
    """Run ``work(progress)``; ``progress(description, fraction_done)`` drives one bar."""
    with progress_bar() as bar:
        task = bar.add_task("starting", total=total)

        def advance(description: str, fraction: float) -> None:
            bar.update(task, description=description, completed=fraction * total)

        return work(advance)


def report(result: dict[str, Any], table: Table, as_json: bool) -> None:
    """The table for people, then (with --json) the whole result on one last line for scripts."""
    result.setdefault("machine", machine_info())
    console.print(table)
    machine = result["machine"]
    console.print(
        f"machine: {machine['cpu']} x{machine['cpus']}, {machine['memory_gib']} GiB, "
        f"{machine['os']}, Python {machine['python']}",
        highlight=False,
    )
    if as_json:
        print(orjson.dumps(result).decode())


@bench_app.command("store")
def bench_store(
    db: Annotated[str, typer.Option(help="sqlite or postgres")] = "sqlite",
    iterations: Annotated[int, typer.Option(min=10, help="operations per figure")] = 500,
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds the operations are split into")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as one JSON line last")] = False,
) -> None:
    """Event store: Strowger against the eventsourcing library, same database, same workload."""
    if db not in ("sqlite", "postgres"):
        raise typer.BadParameter("expected sqlite or postgres", param_hint="--db")
    if rounds > iterations:
        raise typer.BadParameter("at most one round per operation", param_hint="--rounds")
    from strowger.bench.store import render_table, run_store_bench

    result = run_with_progress(lambda progress: run_store_bench(db, iterations, progress, rounds=rounds))
    report(result, render_table(result), as_json)


@bench_app.command("bus")
def bench_bus(
    backend: Annotated[str, typer.Option(help="embedded, kafka or rabbitmq")] = "embedded",
    events: Annotated[int, typer.Option(min=100, help="events per throughput figure")] = 20_000,
    db: Annotated[str, typer.Option(help="sqlite or postgres: inbox, effects, outbox (and embedded log)")] = (
        "sqlite"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as one JSON line last")] = False,
) -> None:
    """Event bus: Strowger's consume pipeline and outbox relay beside the raw broker client, same run."""
    from strowger.bench.bus import BACKENDS, DATABASES, render_table, run_bus_bench

    if backend not in BACKENDS:
        raise typer.BadParameter(f"expected one of {', '.join(BACKENDS)}", param_hint="--backend")
    if db not in DATABASES:
        raise typer.BadParameter(f"expected one of {', '.join(DATABASES)}", param_hint="--db")
    result = run_with_progress(lambda progress: run_bus_bench(backend, events, db, progress))
    report(result, render_table(result), as_json)


@bench_app.command("hub")
def bench_hub(
    events: Annotated[int, typer.Option(min=100, help="events, each delivered once")] = 20_000,
    entities: Annotated[int, typer.Option(min=1, help="distinct entities (delivered in order each)")] = 2_000,
    concurrency: Annotated[int, typer.Option(min=1, help="concurrent POSTs, both sides")] = 64,
    db: Annotated[str, typer.Option(help="sqlite or postgres: the delivery queue and embedded log")] = (
        "sqlite"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as one JSON line last")] = False,
) -> None:
    """TMF hub webhooks: Strowger beside a hand-written durable deliverer and plain HTTP loops."""
    if db not in ("sqlite", "postgres"):
        raise typer.BadParameter("expected sqlite or postgres", param_hint="--db")
    from strowger.bench.hub import render_table as render_hub_table
    from strowger.bench.hub import run_hub_bench

    result = run_with_progress(lambda progress: run_hub_bench(db, events, entities, concurrency, progress))
    report(result, render_hub_table(result), as_json)


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@bench_app.command("e2e")
def bench_e2e(
    backend: Annotated[str, typer.Option(help="embedded or postgres+kafka (in process, real HTTP)")] = (
        "embedded"
    ),
    orders: Annotated[int, typer.Option(min=10, help="orders for the maximum-rate figure")] = 1000,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="run a multi-process cluster with N instances per scalable component (postgres+kafka only)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as one JSON line last")] = False,
) -> None:
    """Product orders through the whole fulfilment chain: orders/s, completion p50/p99, raw db tx/s."""
    from strowger.demo import BACKENDS as E2E_BACKENDS

    if backend not in E2E_BACKENDS:
        raise typer.BadParameter(f"expected one of {', '.join(E2E_BACKENDS)}", param_hint="--backend")
    if processes is not None:
        bench_e2e_cluster(backend, orders, processes, as_json)
        return
    from strowger.bench.e2e import render_table as render_e2e_table
    from strowger.bench.e2e import run_e2e_bench

    result = run_with_progress(lambda progress: run_e2e_bench(backend, orders, progress))
    report(result, render_e2e_table(result), as_json)


def bench_e2e_cluster(backend: str, orders: int, processes: int, as_json: bool) -> None:
    """``bench e2e --processes N``: the cluster of ``strowger cluster`` instead of one process."""
    from strowger.bench.e2e_cluster import BACKEND as CLUSTER_BACKEND
    from strowger.bench.e2e_cluster import render_table as render_cluster_table
    from strowger.bench.e2e_cluster import run_cluster_e2e_bench

    if backend != CLUSTER_BACKEND:
        raise typer.BadParameter(
            f"--processes needs --backend {CLUSTER_BACKEND} (processes share only PostgreSQL and Kafka)",
            param_hint="--processes",
        )
    result = run_with_progress(lambda progress: run_cluster_e2e_bench(processes, orders, progress))
    report(result, render_cluster_table(result), as_json)


@bench_app.command("api")
def bench_api(
    requests: Annotated[
        int, typer.Option(min=10, help="measured POSTs per side (after the warm-up)")
    ] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="concurrent keep-alive clients")] = 32,
    warm_up: Annotated[int, typer.Option(min=0, help="POSTs before measuring, per side")] = 500,
    max_seconds: Annotated[float, typer.Option(min=1, help="a side stops early after this long")] = 60.0,
    rate: Annotated[
        float, typer.Option(min=1, help="requests a second offered on the @ rate (open loop) sides")
    ] = 1000.0,
    open_connections: Annotated[
        int, typer.Option(min=1, help="keep-alive connections of the open loop")
    ] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as one JSON line last")] = False,
) -> None:
    """POST productOrder req/s and p50/p99 on the embedded default, beside a Starlette + SQLite floor:
    closed loops (as fast as answers come back) and open loops at ``--rate`` (the target's test)."""
    from strowger.bench.api import Plan as ApiPlan
    from strowger.bench.api import render_table as render_api_table
    from strowger.bench.api import run_api_bench

    plan = ApiPlan(
        requests=requests,
        concurrency=concurrency,
        warm_up=warm_up,
        max_seconds=max_seconds,
        rate=rate,
        open_connections=open_connections,
    )
    result = run_with_progress(lambda progress: run_api_bench(plan, progress))
    report(result, render_api_table(result), as_json)
