"""``strowger demo``: place orders through TMF622 and watch the whole chain fulfil (or compensate) them.

By default the platform runs in this process (embedded: SQLite in a temporary
directory, or PostgreSQL + Kafka) behind a real HTTP server on a free loopback
port; with ``--url`` the demo drives a platform that is already running.
Exit code 0 when every invariant holds, 1 when one does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strowger.demo import BACKENDS

if TYPE_CHECKING:  # the platform (FastAPI, uvicorn, every component) loads only when the demo runs
    from strowger.demo.drive import DemoDriver, DemoResult, LocalProbe
    from strowger.demo.drive import Progress as ProgressCallback

console = Console()


def demo(
    orders: Annotated[int, typer.Option(min=1, help="orders to place")] = 1000,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="fraction of orders whose activation fails (compensated)")
    ] = 0.05,
    backend: Annotated[
        str, typer.Option(help="in-process platform: embedded or postgres+kafka")
    ] = "embedded",
    url: Annotated[str | None, typer.Option(help="drive a running platform at this base URL instead")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="STROWGER_API_KEY", help="admin API key of the --url platform")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="order submissions in flight")] = 32,
    workdir: Annotated[
        Path | None, typer.Option(help="keep the embedded database here (default: temp)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the order generator (reproducible mix)")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to wait for orders to settle")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON line last")] = False,
    pace: Annotated[
        float | None,
        typer.Option(min=0.1, help="orders per second (default: as fast as --concurrency allows)"),
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(help="write a PNG of the live dashboard taken mid-run (needs Playwright and chromium)"),
    ] = None,
    screenshot_at: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="fraction of the orders settled when the shot is taken")
    ] = 0.5,
) -> None:
    """Place orders over TMF622 with faults injected, then print the outcome and check the invariants."""
    if backend not in BACKENDS:
        raise typer.BadParameter(f"expected one of {', '.join(BACKENDS)}", param_hint="--backend")
    if url and not api_key:
        raise typer.BadParameter("--url needs --api-key (or STROWGER_API_KEY)", param_hint="--api-key")
    options = DriveOptions(orders, failure_rate, concurrency, seed, timeout, pace)
    shot = Shot(screenshot, screenshot_at) if screenshot else None
    result = asyncio.run(_run(options, backend, url, api_key, workdir, shot))
    console.print(summary_table(result))
    for line in invariant_lines(result):
        console.print(line, highlight=False)
    if as_json:
        print(orjson.dumps(summary_json(result)).decode())
    if shot:
        console.print(f"dashboard screenshot written to {shot.path}", highlight=False)
    if not result.ok:
        raise typer.Exit(code=1)


class DriveOptions:
    def __init__(
        self,
        orders: int,
        failure_rate: float,
        concurrency: int,
        seed: int | None,
        timeout: float,
        pace: float | None = None,
    ):
        self.orders = orders
        self.failure_rate = failure_rate
        self.concurrency = concurrency
        self.seed = seed
        self.timeout = timeout
        self.pace = pace


@dataclass(frozen=True)
class Shot:
    """Where to write the dashboard screenshot, and when (fraction of the orders settled)."""

    path: Path
    at: float


async def _run(
    options: DriveOptions,
    backend: str,
    url: str | None,
    api_key: str | None,
    workdir: Path | None,
    shot: Shot | None = None,
) -> DemoResult:
    from strowger.demo.drive import DemoDriver

    async with _target(backend, url, api_key, workdir) as (client, probe):
        driver = DemoDriver(
            client,
            probe=probe,
            concurrency=options.concurrency,
            seed=options.seed,
            timeout=options.timeout,
            pace=options.pace,
        )
        if shot is None:
            with _progress() as (_bar, callback):
                return await driver.run(options.orders, options.failure_rate, callback)
        return await _run_filmed(driver, options, client, shot)


async def _run_filmed(
    driver: DemoDriver, options: DriveOptions, client: httpx.AsyncClient, shot: Shot
) -> DemoResult:
    """The run with the dashboard open in a headless browser, shot once ``shot.at`` has settled."""
    from strowger.demo.screenshot import DashboardCamera, ScreenshotUnavailable

    key = str(client.headers.get("X-API-Key", ""))
    try:
        async with DashboardCamera(str(client.base_url), key, shot.path, at=shot.at) as camera:
            shooting = asyncio.create_task(camera.shoot_when_due(), name="dashboard-screenshot")
            try:
                with _progress() as (_bar, callback):

                    def both(submitted: int, settled: int, total: int) -> None:
                        callback(submitted, settled, total)
                        camera.progress(submitted, settled, total)

                    result = await driver.run(options.orders, options.failure_rate, both)
                if camera.due:
                    await shooting  # a shot under way is finished; a failed one surfaces
            finally:
                if not shooting.done():
                    shooting.cancel()  # never due: the camera shoots the end state on exit
            return result
    except ScreenshotUnavailable as error:
        raise typer.BadParameter(str(error), param_hint="--screenshot") from error


@asynccontextmanager
async def _target(
    backend: str, url: str | None, api_key: str | None, workdir: Path | None
) -> AsyncIterator[tuple[httpx.AsyncClient, LocalProbe | None]]:
    from strowger.demo.drive import LocalProbe
    from strowger.demo.harness import local_platform

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    if url:
        headers = {"X-API-Key": api_key or ""}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0, limits=limits) as client:
            yield client, None
        return
    with console.status(f"starting the platform in process ({backend})", spinner="dots"):
        starting = local_platform(backend, workdir)
        local = await starting.__aenter__()
    try:
        headers = {"X-API-Key": local.api_key}
        async with httpx.AsyncClient(
            base_url=local.base_url, headers=headers, timeout=30.0, limits=limits
        ) as c:
            console.print(f"platform ({backend}) serving on {local.base_url}", highlight=False)
            yield c, LocalProbe(local.platform.database)
    finally:
        with console.status("stopping the platform", spinner="dots"):
            await starting.__aexit__(None, None, None)


class _progress:
    """Two bars: orders submitted, orders settled (terminal or quarantined)."""

    def __enter__(self) -> tuple[Progress, ProgressCallback]:
        self.bar = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        submitted = self.bar.add_task("submitted", total=None)
        settled = self.bar.add_task("settled", total=None)

        def callback(done: int, finished: int, total: int) -> None:
            self.bar.update(submitted, completed=done, total=total)
            if finished:
                self.bar.update(settled, completed=finished, total=total)

        return self.bar, callback

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def summary_json(result: DemoResult) -> dict[str, object]:
    from strowger.demo.drive import percentile

    durations = result.durations_ms()
    return {
        "orders": len(result.orders),
        "completed": result.count("completed"),
        "failed": result.count("failed"),
        "failed_because": dict(result.reasons("failed").most_common()),
        "quarantined": result.quarantined,
        "refused": result.rejected_submissions,
        "step_failure_rate": round(result.step_failure_rate, 5),
        "submit_seconds": round(result.submit_seconds, 3),
        "total_seconds": round(result.total_seconds, 3),
        "orders_per_second": round(len(result.orders) / result.total_seconds, 1)
        if result.total_seconds
        else None,
        "duration_ms": {
            name: percentile(durations, fraction)
            for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "events_published": result.events_published,
        "charges_eur": str(result.charges),
        "credits_eur": str(result.credits),
        "invariants": [
            {"name": invariant.name, "ok": invariant.ok, "detail": invariant.detail}
            for invariant in result.invariants
        ],
        "ok": result.ok,
    }


def summary_table(result: DemoResult) -> Table:
    from strowger.demo.drive import percentile

    durations = result.durations_ms()
    total = len(result.orders)
    table = Table(title=f"strowger demo: {total} orders", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row("completed", f"{result.count('completed')}")
    table.add_row("failed and compensated", f"{result.count('failed')}")
    for reason, count in result.reasons("failed").most_common(3):  # why, the commonest first
        table.add_row(f"  {count} failed:", reason)
    table.add_row("quarantined", f"{result.quarantined}")
    if result.rejected_submissions:
        table.add_row("refused at submission", f"{result.rejected_submissions}")
    table.add_row("order duration p50", _ms(percentile(durations, 0.50)))
    table.add_row("order duration p95", _ms(percentile(durations, 0.95)))
    table.add_row("order duration p99", _ms(percentile(durations, 0.99)))
    table.add_row(
        "wall time", f"{result.total_seconds:.1f} s ({total / max(result.total_seconds, 1e-9):,.0f} orders/s)"
    )
    published = "-" if result.events_published is None else f"{result.events_published:,}"
    table.add_row("events published", published)
    table.add_row("charges", f"{result.charges:,} EUR")
    table.add_row("credits", f"{result.credits:,} EUR")
    table.add_row("activation fault rate per step", f"{result.step_failure_rate:.4f}")
    return table


def invariant_lines(result: DemoResult) -> list[str]:
    marks = {True: "[green]✔[/]", False: "[red]✘[/]", None: "[yellow]-[/]"}
    return [f"{marks[invariant.ok]} {invariant.name}: {invariant.detail}" for invariant in result.invariants]
