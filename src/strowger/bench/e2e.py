"""``strowger bench e2e``: product orders through the whole fulfilment chain, as a user sends them.

The platform runs in this process behind a real HTTP server (the demo harness);
orders are placed over TMF622 and each one goes COM → SOM saga → ROM → activation →
inventories → COM completion → billing. Three figures, same run, same database:

* **maximum rate**: ``orders`` placed as fast as ``concurrency`` clients can, orders/s from
  the first POST until the last order is terminal, and the orderDate → completionDate
  p50/p99 (the platform's own stamps, millisecond resolution);
* **paced**: orders sent at half that rate for a few seconds, and their p99 — the latency a
  platform not running flat out gives;
* **raw database**: small INSERT + COMMIT transactions in a loop on the same database, for
  scale: every order costs many such transactions (one per handler batch per stage).

Each phase also reports the **process CPU time per order**: the platform (and the HTTP
client driving it) runs on one event loop, so 1000 ÷ CPU ms per order is the single-core
ceiling of orders/s, a figure that other jobs on a shared machine disturb far less than
the wall-clock rate.

Where the time goes: each consumer's applied events and batches (a stage whose batches
grow is the one the others wait for).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from rich.table import Table

from strowger.bootstrap import Platform
from strowger.demo import BACKENDS
from strowger.demo.drive import DemoDriver, DemoResult, LocalProbe, outcome_counts, percentile
from strowger.demo.drive import Progress as DriverProgress
from strowger.demo.harness import local_platform
from strowger.demo.orders import BENCH_MIX
from strowger.store.db import Database, TableSet

Progress = Callable[[str, float], None]
CpuClock = Callable[[], float]  # CPU seconds so far: this process's, or a whole cluster's

CONCURRENCY = 64
RAW_TABLE = TableSet(
    "bench_raw",
    sqlite=["CREATE TABLE IF NOT EXISTS bench_raw_tx (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"],
    postgresql=["CREATE TABLE IF NOT EXISTS bench_raw_tx (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)"],
)

__all__ = [
    "BACKENDS",
    "CpuClock",
    "Phase",
    "Plan",
    "maximum_rate",
    "paced_rate",
    "raw_transaction_rate",
    "render_table",
    "run_e2e_bench",
    "warm_up",
]


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run (tests shrink it; the figures in docs use the defaults)."""

    orders: int = 1000
    warm_up_orders: int = 20
    paced_seconds: float = 5.0
    raw_seconds: float = 2.0


def run_e2e_bench(
    backend: str, orders: int, progress: Progress | None = None, plan: Plan | None = None
) -> dict[str, Any]:
    """Every figure of one run, as a JSON-ready dict."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    plan = replace(plan or Plan(), orders=orders)
    return asyncio.run(_bench(backend, plan, progress or (lambda description, fraction: None)))


async def _bench(backend: str, plan: Plan, progress: Progress) -> dict[str, Any]:
    progress("starting the platform", 0.0)
    load_before = os.getloadavg()
    async with local_platform(backend) as local:
        headers = {"X-API-Key": local.api_key}
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=local.base_url, headers=headers, timeout=60.0, limits=limits
        ) as client:
            probe = LocalProbe(local.platform.database)
            await warm_up(client, probe, plan.warm_up_orders, progress)
            maximum = await maximum_rate(client, probe, plan.orders, progress)
            rate = maximum.figures["orders_per_second"] or 1.0
            paced = await paced_rate(client, probe, rate / 2, plan.paced_seconds, progress)
            progress("raw database transactions", 0.9)
            raw = await raw_transaction_rate(local.platform.database, plan.raw_seconds)
            stages = stage_stats(local.platform)
    progress("done", 1.0)
    return {
        "bench": "e2e",
        "backend": backend,
        "orders": plan.orders,
        "concurrency": CONCURRENCY,
        "mix": dict(BENCH_MIX),
        "maximum": maximum.figures,
        "paced": paced.figures,
        "raw_database_tx_per_second": round(raw, 1),
        "stages": stages,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }


class Phase:
    """One measured batch of orders."""

    def __init__(
        self, result: DemoResult, seconds: float, cpu_seconds: float, offered_rate: float | None = None
    ) -> None:
        durations = result.durations_ms("completed")
        orders = len(result.orders)
        cpu_ms = round(cpu_seconds * 1000 / orders, 2) if orders else None
        self.result = result
        self.figures: dict[str, Any] = {
            "orders": len(result.orders),
            "completed": result.count("completed"),
            "not_completed": len(result.orders) - result.count("completed"),
            "states": dict(outcome_counts(result)),
            # why orders were not accepted (a 503 under load, a timeout): counted, never hidden
            "submission_errors": dict(Counter(order.error[:120] for order in result.orders if order.error)),
            "seconds": round(seconds, 3),
            "orders_per_second": round(len(result.orders) / seconds, 1) if seconds else None,
            "offered_rate": None if offered_rate is None else round(offered_rate, 1),
            "cpu_ms_per_order": cpu_ms,
            "cpu_bound_orders_per_second": round(1000 / cpu_ms, 1) if cpu_ms else None,
            "completion_ms": {
                "p50": percentile(durations, 0.50),
                "p95": percentile(durations, 0.95),
                "p99": percentile(durations, 0.99),
                "max": durations[-1] if durations else None,
            },
        }


async def warm_up(client: httpx.AsyncClient, probe: LocalProbe, orders: int, progress: Progress) -> None:
    """A few orders first: the first ones pay for caches, connections and consumer-group joins."""
    if orders:
        progress("warm-up", 0.02)
        await _driver(client, probe, concurrency=8).run(orders, 0.0)


async def maximum_rate(
    client: httpx.AsyncClient,
    probe: LocalProbe,
    orders: int,
    progress: Progress,
    cpu: CpuClock = time.process_time,
) -> Phase:
    cpu_before = cpu()
    result = await _driver(client, probe, concurrency=CONCURRENCY).run(
        orders, 0.0, _phase_progress(progress, "maximum rate", 0.05, 0.6)
    )
    return Phase(result, result.total_seconds, cpu() - cpu_before)


async def paced_rate(
    client: httpx.AsyncClient,
    probe: LocalProbe,
    rate: float,
    seconds: float,
    progress: Progress,
    cpu: CpuClock = time.process_time,
) -> Phase:
    """Orders at a steady ``rate`` per second for ``seconds`` (at least 10 orders)."""
    count = max(10, int(rate * seconds))
    driver = _driver(client, probe, concurrency=CONCURRENCY, pace=rate)
    cpu_before = cpu()
    result = await driver.run(count, 0.0, _phase_progress(progress, f"paced at {rate:,.1f}/s", 0.6, 0.9))
    return Phase(result, result.total_seconds, cpu() - cpu_before, offered_rate=rate)


def _phase_progress(progress: Progress, name: str, start: float, end: float) -> DriverProgress:
    """The driver's (submitted, settled, total) as one bar from ``start`` to ``end``, never going back."""
    most = 0

    def report(submitted: int, settled: int, total: int) -> None:
        nonlocal most
        most = max(most, settled)  # submission reports come with settled=0
        progress(f"{name}: {most}/{total} done", round(start + (end - start) * most / max(total, 1), 4))

    return report


def _driver(
    client: httpx.AsyncClient, probe: LocalProbe, *, concurrency: int, pace: float | None = None
) -> DemoDriver:
    return DemoDriver(client, probe=probe, mix=BENCH_MIX, concurrency=concurrency, seed=1, pace=pace)


async def raw_transaction_rate(database: Database, seconds: float) -> float:
    """Small INSERT + COMMIT transactions per second on ``database``, one after the other."""
    await database.create_tables(RAW_TABLE)
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO bench_raw_tx (payload) VALUES (?)", ("x" * 64,))
        done += 1
    return done / (time.perf_counter() - started)


def stage_stats(platform: Platform) -> list[dict[str, Any]]:
    """Per consumer: events applied and batches (mean batch size: how far behind that stage ran)."""
    stages = []
    for runner in platform.runners:
        stats = runner.stats
        if not stats.applied:
            continue
        stages.append(
            {
                "consumer": runner.consumer.name,
                "applied": stats.applied,
                "batches": stats.batches,
                "mean_batch": round(stats.applied / stats.batches, 1) if stats.batches else None,
                "retried": stats.retried,
                "dead": stats.dead,
            }
        )
    return sorted(stages, key=lambda stage: -(stage["mean_batch"] or 0))


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"bench e2e: {result['backend']}, {result['orders']} orders (mix {result['mix']})")
    for column in ("phase", "orders/s", "CPU ms/order", "completed", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in (("maximum rate", result["maximum"]), ("paced (half max)", result["paced"])):
        latency = phase["completion_ms"]
        table.add_row(
            name,
            f"{phase['orders_per_second']:,}" if phase["orders_per_second"] else "-",
            _ms(phase["cpu_ms_per_order"], digits=1),
            f"{phase['completed']}/{phase['orders']}",
            _ms(latency["p50"]),
            _ms(latency["p95"]),
            _ms(latency["p99"]),
            _ms(latency["max"]),
        )
    table.add_row("raw db INSERT+COMMIT", f"{result['raw_database_tx_per_second']:,}", "", "", "", "", "", "")
    table.caption = (
        "busiest stages (mean batch): "
        + ", ".join(f"{stage['consumer']} {stage['mean_batch']}" for stage in result["stages"][:4])
        + f" | load average before {result['load_average']['before'][0]}"
    )
    return table
