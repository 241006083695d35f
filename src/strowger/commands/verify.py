"""``strowger verify``: prove the platform's guarantees on a real platform.

* ``verify sagas`` — the saga fault matrix (docs/verification.md): every saga,
  a failure at every step and compensation, then the invariants; exit 1 if any fails.
* ``verify reconcile`` — compare inventories, sagas and pools on the configured
  database, report drift, send the safe repairs to their owners (``--dry-run`` sends
  nothing): commands in the outbox, which ROM and the inventory apply once the platform's
  relay has published them.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

verify_app = typer.Typer(name="verify", help="Verify sagas and reconcile inventories.", no_args_is_help=True)
console = Console(width=160)


@verify_app.callback()
def verify() -> None:
    """Verify sagas (the fault matrix) and reconcile inventories with sagas and pools."""


@verify_app.command("sagas")
def sagas(
    configured: Annotated[
        bool,
        typer.Option(
            "--configured",
            help="Run on the configured database and bus (STROWGER_*) instead of a throwaway embedded one",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each saga command is awaited")] = 2.0,
    verbose: Annotated[bool, typer.Option(help="Show the platform's warnings and errors")] = False,
) -> None:
    """Run every saga with a failure at each step and compensation; check the invariants."""
    from strowger.cli import settings_or_exit  # late: strowger.cli mounts this app
    from strowger.verify.run import render, verify_sagas

    # Injected faults make the platform log errors by design; they are the table's rows here.
    logging.basicConfig(level=logging.WARNING if verbose else logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="strowger-verify-") as directory:
        if configured:
            settings = settings_or_exit()
        else:
            settings = settings_or_exit(
                database_url=f"sqlite:///{Path(directory) / 'verify.db'}", bus_url="embedded://"
            )
        report = asyncio.run(verify_sagas(settings, timeout=timeout))
    render(report, console)
    raise typer.Exit(code=0 if report.ok else 1)


@verify_app.command("reconcile")
def reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report drift, repair nothing")] = False,
) -> None:
    """Compare inventories with sagas and pools on the configured database; repair the safe drift."""
    from rich.table import Table

    from strowger.bootstrap import empty_platform
    from strowger.cli import settings_or_exit
    from strowger.components.reconciliation.reconcile import RECONCILED_TABLES
    from strowger.components.reconciliation.wiring import reconciler

    settings = settings_or_exit()

    async def main() -> list[Any]:
        # Only the database and the outbox are used (drift events, repair commands); the bus is
        # never started. The database is the platform's: its schema and, run as operations of a
        # split cluster (its environment in cluster.json), the other components' data as views.
        platform = empty_platform(settings)
        async with platform.database as database:
            await database.create_tables(*RECONCILED_TABLES)  # idempotent: a fresh database has no drift
            return await reconciler(platform).run(repair=not dry_run)

    found = asyncio.run(main())
    table = Table("kind", "saga", "subject", "detail", "repair sent", title="Inventory drift")
    for drift in found:
        table.add_row(
            drift.kind, drift.saga_id or "-", drift.subject, drift.detail, "yes" if drift.repaired else "no"
        )
    console.print(table)
    operator = [drift for drift in found if not drift.repaired]
    console.print(f"{len(found)} drift(s), {len(operator)} left for an operator", highlight=False)
    if len(operator) < len(found):
        console.print("repairs go to ROM and the inventory as commands (outbox): applied when they run")
    raise typer.Exit(code=1 if operator else 0)


if __name__ == "__main__":  # ``python -m strowger.commands.verify`` before the CLI mounts it
    verify_app()
