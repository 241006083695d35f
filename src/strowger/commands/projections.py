"""``strowger projections``: list projections with checkpoint, head and lag; rebuild one while running.

Works on the database named by ``STROWGER_DATABASE_URL`` (or strowger.toml). A
rebuild may run from this command while the platform serves: it builds a new
generation beside the live one, and the platform's runner follows the swap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from strowger.projections.engine import (
    Generation,
    ProjectionStatus,
    RebuildInProgress,
    RebuildReport,
    rebuild,
    status,
)
from strowger.projections.sagas import SAGA_LOG_ORDER
from strowger.projections.wiring import (
    builtin_projections,
    event_store_source,
    find_projection,
    saga_projections,
    source_for,
)
from strowger.saga.store import SAGA_TABLES
from strowger.store.db import Database, open_database

projections_app = typer.Typer(
    name="projections", help="Inspect and rebuild the read models (projections).", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def _run(operation: Callable[[Database], Awaitable[T]]) -> T:
    from strowger.cli import settings_or_exit  # late: strowger.cli mounts this app

    settings = settings_or_exit()

    async def main() -> T:
        async with open_database(settings.database_url) as database:
            await event_store_source(database).store.setup()
            await database.create_tables(SAGA_TABLES, SAGA_LOG_ORDER)  # the saga views' source
            return await operation(database)

    return asyncio.run(main())


def _table(rows: list[ProjectionStatus]) -> Table:
    table = Table(title="Projections")
    for column in ("name", "version", "generation", "checkpoint", "head", "lag", "rebuilding", "updated"):
        table.add_column(column)
    for row in rows:
        building = f"g{row.building.generation} at {row.building.position}" if row.building else "-"
        table.add_row(
            row.name,
            str(row.version),
            "-" if row.generation is None else f"g{row.generation}",
            str(row.position),
            str(row.head),
            str(row.lag),
            building,
            row.updated_at or "-",
        )
    return table


async def _statuses(database: Database, names: list[str]) -> list[ProjectionStatus]:
    everything = [*builtin_projections(), *saga_projections()]
    chosen = [find_projection(name) for name in names] if names else everything
    return [await status(database, source_for(projection, database), projection) for projection in chosen]


@projections_app.command("list")
def list_projections() -> None:
    """Every projection with its checkpoint, the event store's head and the lag between them."""
    console.print(_table(_run(lambda database: _statuses(database, []))))


@projections_app.command("status")
def show_status(
    names: Annotated[list[str] | None, typer.Argument(help="Projection names (default: all)")] = None,
) -> None:
    """Checkpoint, head and lag of the named projections (exit 1 on an unknown name)."""
    try:
        rows = _run(lambda database: _statuses(database, names or []))
    except KeyError as exc:
        err_console.print(exc.args[0])
        raise typer.Exit(code=1) from None
    console.print(_table(rows))


@projections_app.command("rebuild")
def rebuild_projection(
    name: Annotated[str, typer.Argument(help="Projection to rebuild")],
    batch_size: Annotated[int, typer.Option(help="Events per transaction")] = 500,
    takeover: Annotated[
        bool, typer.Option("--takeover", help="Start over if an earlier rebuild crashed mid-way")
    ] = False,
) -> None:
    """Rebuild NAME from the first event into a new generation and swap it in; reads go on meanwhile."""
    try:
        projection = find_projection(name)
    except KeyError as exc:
        err_console.print(exc.args[0])
        raise typer.Exit(code=1) from None

    def progress(generation: Generation) -> None:
        console.print(f"  g{generation.generation}: at position {generation.position}", highlight=False)

    async def operation(database: Database) -> RebuildReport:
        source = source_for(projection, database)
        return await rebuild(
            database, source, projection, batch_size=batch_size, takeover=takeover, progress=progress
        )

    try:
        report = _run(operation)
    except RebuildInProgress as exc:
        err_console.print(str(exc))
        raise typer.Exit(code=1) from None
    old = "none" if report.old_generation is None else f"g{report.old_generation}"
    console.print(
        f"rebuilt {report.name}: g{report.new_generation} is live at position {report.position} "
        f"({report.events_read} events read; {old} dropped)",
        highlight=False,
    )
