"""``strowger sagas``: inspect fulfilment sagas and act on them (audited) on the configured database.

Operator actions write the saga change, its commands (to the outbox) and the
audit row in one transaction; the running platform's relay publishes them.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.saga import OperatorAction
from strowger.store.db import Database, open_database

sagas_app = typer.Typer(name="sagas", help="Inspect and repair sagas.", no_args_is_help=True)
console = Console()
T = TypeVar("T")


def _run(operation: Callable[[Database], Awaitable[T]]) -> T:
    from strowger.cli import settings_or_exit  # late: strowger.cli mounts this app

    settings = settings_or_exit()

    async def main() -> T:
        async with open_database(settings.database_url) as database:
            return await operation(database)

    return asyncio.run(main())


def _som(database: Database) -> Any:
    from strowger.bootstrap import Platform
    from strowger.bus.embedded import EmbeddedBus
    from strowger.cli import settings_or_exit
    from strowger.components.service_ordering.wiring import build_service_ordering

    # Only the database and the outbox are used; the bus is never started.
    platform = Platform(settings=settings_or_exit(), database=database, bus=EmbeddedBus(database=database))
    return build_service_ordering(platform)


@sagas_app.command("list")
def list_sagas(
    status: Annotated[str | None, typer.Option(help="e.g. quarantined, running, failed")] = None,
    saga_type: Annotated[str | None, typer.Option("--type", help="saga type")] = None,
    limit: int = 50,
) -> None:
    """Sagas, newest first."""
    from strowger.components.service_ordering.api import list_saga_rows

    rows = _run(lambda database: list_saga_rows(database, status=status, saga_type=saga_type, limit=limit))
    table = Table("id", "type", "status", "step", "reason", "updated")
    for row in rows:
        table.add_row(
            row["id"],
            row["sagaType"],
            row["status"],
            str(row["currentStep"]),
            row["reason"],
            row["updatedAt"],
        )
    console.print(table)


@sagas_app.command("show")
def show(saga_id: str) -> None:
    """One saga as JSON: data, steps, compensations, errors, log, audit."""
    from strowger.components.service_ordering.api import saga_detail

    async def detail(database: Database) -> dict[str, Any]:
        return await saga_detail(_som(database), saga_id)

    typer.echo(orjson.dumps(_run(detail), option=orjson.OPT_INDENT_2).decode())


def _act(action: OperatorAction, saga_id: str, reason: str, actor: str | None) -> None:
    async def act(database: Database) -> str:
        som = _som(database)
        async with database.transaction() as tx:
            state = await som.operate(tx, saga_id, action, actor=actor or getpass.getuser(), reason=reason)
        return str(state.status)

    console.print(f"saga {saga_id}: {action.value} done, now {_run(act)}")


Reason = Annotated[str, typer.Option("--reason", help="why (audited)")]
Actor = Annotated[str | None, typer.Option("--actor", help="who (default: the OS user)")]


@sagas_app.command("retry")
def retry(saga_id: str, reason: Reason, actor: Actor = None) -> None:
    """Send the awaited action or stuck compensation again now."""
    _act(OperatorAction.RETRY, saga_id, reason, actor)


@sagas_app.command("skip")
def skip(saga_id: str, reason: Reason, actor: Actor = None) -> None:
    """Treat the awaited step (or compensation) as done by hand."""
    _act(OperatorAction.SKIP, saga_id, reason, actor)


@sagas_app.command("force-complete")
def force_complete(saga_id: str, reason: Reason, actor: Actor = None) -> None:
    """End the saga now in its current direction."""
    _act(OperatorAction.FORCE_COMPLETE, saga_id, reason, actor)


@sagas_app.command("compensate")
def compensate(saga_id: str, reason: Reason, actor: Actor = None) -> None:
    """Stop going forward and undo what was done."""
    _act(OperatorAction.COMPENSATE, saga_id, reason, actor)


@sagas_app.command("abort")
def abort(saga_id: str, reason: Reason, actor: Actor = None) -> None:
    """Stop where it is, undo nothing, release the locks."""
    _act(OperatorAction.ABORT, saga_id, reason, actor)
