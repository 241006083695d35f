"""``strowger dlq``: list, show, replay and discard dead letters.

Works on the database named by ``STROWGER_DATABASE_URL`` (or strowger.toml), so
an operator can repair a stopped platform too: a replay only hands the letters
back to their consumer, which applies them when it runs. Against a split cluster,
use the operations component's settings (its URL, ``STROWGER_DATABASE_SCHEMA``,
``STROWGER_DATABASE_SCHEMAS`` and ``STROWGER_COMPONENT=operations``, from the
cluster's ``cluster.json``): it lists every component's letters and writes each in
its owner's schema, as ``/dlq`` does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.components.database import borrowed_names, split_schemas
from strowger.ops.dlq_api import dead_letter_queue_for
from strowger.settings import Settings
from strowger.store.db import Database, open_database
from strowger.store.deadletters import DeadLetterFilter, DeadLetterQueue, ParkedMessage

dlq_app = typer.Typer(name="dlq", help="Inspect and repair the dead-letter queue.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``90``, ``30s``, ``15m``, ``2h`` or ``7d`` as a duration; BadParameter otherwise."""
    match = _AGE.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r}: expected a number with an optional unit s, m, h or d (e.g. 2h)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _run(operation: Callable[[DeadLetterQueue], Awaitable[T]]) -> T:
    from strowger.cli import settings_or_exit  # late: strowger.cli mounts this app

    settings = settings_or_exit()

    async def main() -> T:
        async with _database(settings) as database:
            return await operation(dead_letter_queue_for(database, settings))

    return asyncio.run(main())


def _database(settings: Settings) -> Database:
    """The settings' database as the platform opens it: its schema, and its borrowed views."""
    options: dict[str, object] = {}
    if settings.database == "postgresql" and settings.database_schema:
        options["schema"] = settings.database_schema
    if (schemas := split_schemas(settings)) is not None:
        options["borrowed"] = borrowed_names(settings.component, schemas)
    return open_database(settings.database_url, **options)


ConsumerOption = Annotated[str | None, typer.Option("--consumer", "-c", help="Only this consumer")]
ErrorTypeOption = Annotated[str | None, typer.Option("--error-type", "-e", help="Only this error type")]
EntityOption = Annotated[str | None, typer.Option("--entity", help="Only this entity key")]
OlderOption = Annotated[
    str | None, typer.Option("--older-than", help="Only letters that failed at least this long ago (2h, 7d)")
]


def _filter(
    consumer: str | None, error_type: str | None, entity: str | None, older_than: str | None, ids: list[int]
) -> DeadLetterFilter:
    return DeadLetterFilter(
        consumer=consumer,
        error_type=error_type,
        entity_key=entity,
        older_than=parse_age(older_than) if older_than else None,
        ids=ids or None,
    )


def _table(letters: list[ParkedMessage], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "consumer", "entity", "event type", "error", "retries", "last failure"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.consumer,
            letter.entity_key or "-",
            letter.event_type or "-",
            f"{letter.error_type}: {letter.error_message}",
            str(letter.retries),
            letter.last_failed_at.isoformat(timespec="seconds") if letter.last_failed_at else "-",
        )
    return table


@dlq_app.command("list")
def list_letters(
    consumer: ConsumerOption = None,
    error_type: ErrorTypeOption = None,
    entity: EntityOption = None,
    older_than: OlderOption = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
) -> None:
    """List dead letters, oldest first."""
    where = _filter(consumer, error_type, entity, older_than, [])
    letters = _run(lambda dlq: dlq.find(where, limit=limit))
    console.print(_table(letters, f"{len(letters)} dead letter(s)"))


@dlq_app.command()
def show(letter_id: Annotated[int, typer.Argument(help="Dead letter id")]) -> None:
    """Show one dead letter in full: headers, body, traceback."""

    async def fetch(dlq: DeadLetterQueue) -> tuple[ParkedMessage | None, int]:
        letter = await dlq.show(letter_id)
        return letter, (await dlq.waiting_behind(letter) if letter else 0)

    letter, behind = _run(fetch)
    if letter is None:
        err_console.print(f"no parked message {letter_id}")
        raise typer.Exit(code=1)
    view = letter.to_json(full=True)
    traceback = view.pop("traceback") or ""
    view["waitingBehind"] = behind
    console.print_json(orjson.dumps(view).decode())
    console.print(traceback, highlight=False, markup=False)


@dlq_app.command()
def replay(
    letter_ids: Annotated[
        list[int] | None, typer.Argument(help="Dead letter ids (default: all matching)")
    ] = None,
    consumer: ConsumerOption = None,
    error_type: ErrorTypeOption = None,
    entity: EntityOption = None,
    older_than: OlderOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be replayed")] = False,
) -> None:
    """Hand dead letters back to their consumers (idempotent: already-applied events are skipped)."""
    where = _filter(consumer, error_type, entity, older_than, letter_ids or [])
    report = _run(lambda dlq: dlq.replay(where, dry_run=dry_run))
    verb = "would replay" if dry_run else "replayed"
    console.print(_table(list(report.replayed), f"{verb} {len(report.replayed)} dead letter(s)"))


@dlq_app.command()
def discard(
    letter_id: Annotated[int, typer.Argument(help="Dead letter id")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Drop one dead letter for good; the events waiting behind it are then applied."""
    if not yes:
        typer.confirm(f"Discard dead letter {letter_id} for good?", abort=True)
    letter = _run(lambda dlq: dlq.discard(letter_id))
    if letter is None:
        err_console.print(f"no dead letter {letter_id}")
        raise typer.Exit(code=1)
    console.print(
        f"discarded {letter.id} ({letter.event_type} of {letter.entity_key or '-'}, {letter.consumer})"
    )
