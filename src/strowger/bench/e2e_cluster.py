"""``strowger bench e2e --backend postgres+kafka --processes N``: the same orders through a cluster.

Where ``strowger bench e2e`` runs the whole platform in its own process, this starts the
multi-process deployment of ``strowger cluster`` (:mod:`strowger.cluster`): one
``strowger run <component>`` process per component instance, ``N`` instances of every
scalable component (catalog and operations stay single), on PostgreSQL + Kafka in a fresh
schema and topic namespace. The bench process only drives: orders go over TMF622 through
the routing transport (the gateway, rotating over the ordering instances), and the same
phases and figures as the single-process bench are measured with the same code
(:mod:`strowger.bench.e2e`): warm-up, maximum rate, paced at half of it, raw PostgreSQL
INSERT + COMMIT transactions on the cluster's database.

CPU per order is the CPU time of every cluster process (``/proc/<pid>/stat``) plus the
bench process's own (the HTTP client and the state polls), each also reported apart.
PostgreSQL's and Kafka's own CPU is not in it, as in the single-process bench.

Per consumer, the events each instance handled (from each process's ``/metrics``) show
whether a second instance took a share of the work: a Kafka consumer group splits a topic's
partitions between its members, never one partition between two.

The cluster is always stopped and its schema and topics dropped, on failure and on Ctrl-C
too (``asyncio.run`` turns Ctrl-C into a cancellation the ``finally`` sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from strowger.bench.e2e import (
    CONCURRENCY,
    Phase,
    Plan,
    Progress,
    maximum_rate,
    paced_rate,
    raw_transaction_rate,
    warm_up,
)
from strowger.cluster.plan import ClusterPlan, plan_cluster
from strowger.cluster.routing import ClusterTransport
from strowger.cluster.supervisor import Cluster
from strowger.demo.drive import LocalProbe
from strowger.demo.harness import DEFAULT_KAFKA_URL, DEFAULT_POSTGRES_URL
from strowger.demo.orders import BENCH_MIX
from strowger.store.db import Database, open_database

log = logging.getLogger("strowger.bench")
BACKEND = "postgres+kafka"  # the only backend a cluster shares between processes
EXPECTED_STARTUP = 90.0  # seconds: only for the progress bar (13 processes take 30-60 s here)
STARTUP_SHARE = 0.2  # of the progress bar
TEARDOWN_SHARE = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

__all__ = ["BACKEND", "cluster_plan", "render_table", "run_cluster_e2e_bench"]


def run_cluster_e2e_bench(
    processes: int,
    orders: int,
    progress: Progress | None = None,
    plan: Plan | None = None,
    *,
    database_url: str | None = None,
    bus_url: str | None = None,
) -> dict[str, Any]:
    """Every figure of one run on a cluster with ``processes`` instances per scalable component."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    plan = replace(plan or Plan(), orders=orders)
    urls = (database_url or _database_url(), bus_url or _bus_url())
    return asyncio.run(_bench(processes, plan, urls, progress or (lambda description, fraction: None)))


def _database_url() -> str:
    url = os.environ.get("STROWGER_DATABASE_URL", DEFAULT_POSTGRES_URL)
    return url if url.startswith(("postgresql://", "postgres://")) else DEFAULT_POSTGRES_URL


def _bus_url() -> str:
    url = os.environ.get("STROWGER_BUS_URL", DEFAULT_KAFKA_URL)
    return url if url.startswith("kafka://") else DEFAULT_KAFKA_URL


def cluster_plan(root: Path, processes: int, database_url: str, bus_url: str) -> ClusterPlan:
    """``processes`` instances of each scalable component, set up as the single-process bench's platform."""
    return plan_cluster(
        root,
        database_url=database_url,
        bus_url=bus_url,
        instances=processes,
        # as the single-process harness: an idle-then-busy run must not wait 0.5 s for its first events
        environment={"STROWGER_OUTBOX_POLL_INTERVAL": "0.05"},
    )


async def _bench(processes: int, plan: Plan, urls: tuple[str, str], progress: Progress) -> dict[str, Any]:
    load_before = os.getloadavg()
    async with _running_cluster(processes, urls, progress) as (cluster, startup_seconds):
        inner = _scaled(progress, STARTUP_SHARE, 1.0 - TEARDOWN_SHARE)
        database = open_database(cluster.plan.database_url, schema=cluster.plan.database_schema)
        await database.open()
        load_at_orders = os.getloadavg()  # the cluster's start-up is in "before"'s 1-minute figure
        try:
            figures = await _drive(cluster, database, plan, inner)
            inner("raw database transactions", 0.9)
            raw = await raw_transaction_rate(database, plan.raw_seconds)
        finally:
            await database.close()
        inner("events handled per instance", 0.95)
        stages = await stage_stats(cluster)
        progress("stopping the cluster, dropping its schema and topics", 1.0 - TEARDOWN_SHARE)
    progress("done", 1.0)
    return {
        "bench": "e2e",
        "backend": BACKEND,
        "processes": processes,
        "cluster": {
            "id": cluster.plan.cluster_id,  # its schema and topic namespace (dropped by now) carry it
            "processes": len(cluster.plan.processes),
            "instances": _instances(cluster.plan),
            "startup_seconds": round(startup_seconds, 1),
        },
        "orders": plan.orders,
        "concurrency": CONCURRENCY,
        "mix": dict(BENCH_MIX),
        **figures,
        "raw_database_tx_per_second": round(raw, 1),
        "stages": stages,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "orders_start": [round(x, 2) for x in load_at_orders],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }


@contextlib.asynccontextmanager
async def _running_cluster(
    processes: int, urls: tuple[str, str], progress: Progress
) -> AsyncIterator[tuple[Cluster, float]]:
    """A ready cluster and its start-up time; stopped and dropped on the way out, whatever happened.

    Its logs stay in a temporary directory, removed after a good run and kept (and named in
    the error) after a failed one: they say why a process did not start or what it logged.
    """
    root = Path(tempfile.mkdtemp(prefix="strowger-bench-cluster-"))
    cluster = Cluster(cluster_plan(root, processes, *urls))
    ok = False
    try:
        started = time.monotonic()
        await _start(cluster, progress)
        yield cluster, time.monotonic() - started
        ok = True
    except Exception as exc:
        exc.add_note(f"cluster logs kept in {root}")
        raise
    finally:
        await cluster.down()  # SIGTERM, then SIGKILL; DROP SCHEMA; topics deleted
        if ok:
            shutil.rmtree(root, ignore_errors=True)


async def _start(cluster: Cluster, progress: Progress) -> None:
    """``cluster.up()``, with the bar showing the seconds it has taken so far."""
    count = len(cluster.plan.processes)
    starting = asyncio.create_task(cluster.up())
    started = time.monotonic()
    try:
        while not starting.done():
            elapsed = time.monotonic() - started
            fraction = STARTUP_SHARE * min(0.95, elapsed / EXPECTED_STARTUP)
            progress(f"starting {count} processes ({elapsed:.0f} s)", fraction)
            await asyncio.wait({starting}, timeout=1.0)
    finally:
        starting.cancel()  # no-op once done; on Ctrl-C stops waiting (the caller's down() kills them)
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    starting.result()


async def _drive(cluster: Cluster, database: Database, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Warm-up, maximum rate and paced phases, as the single-process bench runs them."""
    clock = ClusterCpu(cluster)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    # the gateway's pool as wide as the bench's concurrency, as the single-process bench's client
    transport = ClusterTransport(cluster.plan, cluster.alive, limits)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://cluster",
        headers={"X-API-Key": cluster.admin_key},
        timeout=60.0,
    ) as client:
        probe = LocalProbe(database)
        await warm_up(client, probe, plan.warm_up_orders, progress)
        maximum = await maximum_rate(client, probe, plan.orders, progress, clock)
        maximum_split = clock.last_phase()
        rate = maximum.figures["orders_per_second"] or 1.0
        paced = await paced_rate(client, probe, rate / 2, plan.paced_seconds, progress, clock)
        paced_split = clock.last_phase()
    return {
        "maximum": {**maximum.figures, **_per_order(maximum_split, maximum)},
        "paced": {**paced.figures, **_per_order(paced_split, paced)},
    }


class ClusterCpu:
    """CPU seconds used so far by every cluster process plus this one (the driver).

    Each reading is kept apart as (cluster, driver), so a phase's total (its first and last
    reading) splits exactly into the two.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.readings: list[tuple[float, float]] = []

    def __call__(self) -> float:
        cluster = sum(process_cpu_seconds(pid) for pid in self.cluster.pids.values())
        driver = time.process_time()
        self.readings.append((cluster, driver))
        return cluster + driver

    def last_phase(self) -> dict[str, float]:
        """CPU seconds between the last two readings (a phase's start and end), per side."""
        (cluster_before, driver_before), (cluster_after, driver_after) = self.readings[-2:]
        return {"cluster": cluster_after - cluster_before, "driver": driver_after - driver_before}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, every thread (0 once it is gone); a `strowger run` forks no workers."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # fields after "(comm)": state is field 3, utime and stime fields 14 and 15
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _per_order(split: dict[str, float], phase: Phase) -> dict[str, Any]:
    orders = phase.figures["orders"] or 1
    cpus = os.cpu_count() or 1
    total_ms = phase.figures["cpu_ms_per_order"]
    return {
        "cluster_cpu_ms_per_order": round(split["cluster"] * 1000 / orders, 2),
        "driver_cpu_ms_per_order": round(split["driver"] * 1000 / orders, 2),
        # the processes run in parallel: every core of the machine is the ceiling, not one
        "cpu_bound_orders_per_second_all_cores": round(cpus * 1000 / total_ms, 1) if total_ms else None,
    }


def _instances(plan: ClusterPlan) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for spec in plan.processes:
        counts[spec.component] += 1
    return dict(counts)


async def stage_stats(cluster: Cluster) -> list[dict[str, Any]]:
    """Per consumer: events applied, dead-lettered, and how the applied split between its instances."""
    per_consumer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    dead: dict[str, float] = defaultdict(float)
    headers = {"X-API-Key": cluster.admin_key}
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as client:
        for spec in cluster.plan.processes:
            try:
                response = await client.get(f"{cluster.url(spec)}/metrics")
                response.raise_for_status()
            except httpx.HTTPError as exc:  # the figures are measured already: report the gap, keep them
                log.warning("no /metrics from %s: %s", spec.name, exc)
                continue
            for consumer, outcome, value in handled_counts(response.text):
                if outcome == "applied":
                    per_consumer[consumer][spec.name] += value
                elif outcome in ("rejected", "failed"):
                    dead[consumer] += value
    stages = [
        {
            "consumer": consumer,
            "applied": int(sum(by_process.values())),
            "per_instance": sorted((int(value) for value in by_process.values()), reverse=True),
            "failed_or_rejected": int(dead.get(consumer, 0)),
        }
        for consumer, by_process in per_consumer.items()
    ]
    return sorted(stages, key=lambda stage: stage["consumer"])


def handled_counts(exposition: str) -> list[tuple[str, str, float]]:
    """(consumer, outcome, count) of every ``strowger_events_handled`` sample in a /metrics text."""
    counts = []
    for family in text_string_to_metric_families(exposition):
        if family.name != "strowger_events_handled":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts.append((sample.labels["consumer"], sample.labels["outcome"], sample.value))
    return counts


def _scaled(progress: Progress, start: float, end: float) -> Progress:
    """The single-process bench's 0..1 progress mapped onto ``start``..``end`` of this bar."""
    return lambda description, fraction: progress(description, start + (end - start) * fraction)


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(result: dict[str, Any]) -> Table:
    cluster = result["cluster"]
    table = Table(
        title=(
            f"bench e2e: {result['backend']}, {result['processes']} instance(s) per component "
            f"({cluster['processes']} processes, ready in {cluster['startup_seconds']} s), "
            f"{result['orders']} orders"
        )
    )
    columns = (
        "phase",
        "orders/s",
        "CPU ms/order",
        "of it cluster",
        "completed",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in (("maximum rate", result["maximum"]), ("paced (half max)", result["paced"])):
        latency = phase["completion_ms"]
        table.add_row(
            name,
            f"{phase['orders_per_second']:,}" if phase["orders_per_second"] else "-",
            _ms(phase["cpu_ms_per_order"], digits=1),
            _ms(phase["cluster_cpu_ms_per_order"], digits=1),
            f"{phase['completed']}/{phase['orders']}",
            _ms(latency["p50"]),
            _ms(latency["p95"]),
            _ms(latency["p99"]),
        )
    raw = f"{result['raw_database_tx_per_second']:,}"
    table.add_row("raw db INSERT+COMMIT", raw, "", "", "", "", "", "")
    split = [stage for stage in result["stages"] if len(stage["per_instance"]) > 1]
    table.caption = (
        "applied per instance: "
        + (", ".join(f"{s['consumer']} {'/'.join(map(str, s['per_instance']))}" for s in split[:4]) or "-")
        + f" | load average before {result['load_average']['before'][0]}"
        + f", at the first order {result['load_average']['orders_start'][0]}"
    )
    return table
