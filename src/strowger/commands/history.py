"""``strowger history <order-id>``: the full, timestamped event history of a product order.

Reads the event store's ``history()`` (events exactly as recorded, never
upcast): the audit trail of what happened to the order, when, and why
(correlation and causation ids link each event to the request or event that
caused it). ``--json`` prints one JSON line for scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strowger.components.ordering.aggregate import ProductOrder
from strowger.events.envelope import format_time
from strowger.store.db import open_database
from strowger.store.eventstore import StoredEvent, open_event_store


async def order_history(database_url: str, order_id: str) -> list[StoredEvent]:
    """Every event of order ``order_id``, oldest first (empty if there is no such order)."""
    async with open_database(database_url) as database:
        store = open_event_store(database)
        await store.setup()
        return await store.history(ProductOrder.stream_of(order_id))


def history_record(event: StoredEvent) -> dict[str, Any]:
    """One event as a JSON object (the payload included)."""
    return {
        "version": event.version,
        "eventType": event.event_type,
        "schemaVersion": event.schema_version,
        "recordedAt": format_time(event.recorded_at),
        "eventId": event.event_id,
        "correlationId": event.correlation_id,
        "causationId": event.causation_id,
        "position": event.position,
        "payload": event.payload,
    }


def history_json(order_id: str, events: Sequence[StoredEvent]) -> str:
    return orjson.dumps(
        {"productOrder": order_id, "events": [history_record(event) for event in events]}
    ).decode()


def history_table(order_id: str, events: Sequence[StoredEvent]) -> Table:
    table = Table(title=f"productOrder {order_id}: {len(events)} events")
    for column in ("Version", "Event type", "Recorded at (UTC)", "State", "Correlation id", "Causation id"):
        table.add_column(column, no_wrap=column != "Event type")
    for event in events:
        table.add_row(
            str(event.version),
            event.event_type,
            format_time(event.recorded_at),
            _state(event),
            event.correlation_id or "",
            event.causation_id or "",
        )
    return table


def _state(event: StoredEvent) -> str:
    """The state an event leaves behind, where it says (the order's, an item's, a task's)."""
    payload = event.payload
    if "state" in payload:
        return str(payload["state"])
    if isinstance(payload.get("states"), dict):
        return ", ".join(f"item {item}: {state}" for item, state in payload["states"].items())
    order = payload.get("order")
    return str(order.get("state", "")) if isinstance(order, dict) else ""


def history(
    order_id: Annotated[str, typer.Argument(help="The product order id")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line instead of a table")] = False,
) -> None:
    """Print every event of a product order: type, version, time, correlation and causation ids."""
    from strowger.cli import settings_or_exit  # late: strowger.cli mounts this command

    settings = settings_or_exit()
    events = asyncio.run(order_history(settings.database_url, order_id))
    if not events:
        Console(stderr=True).print(f"[red]no product order {order_id!r}[/red]")
        raise typer.Exit(code=1)
    if as_json:
        typer.echo(history_json(order_id, events))
    else:
        Console().print(history_table(order_id, events))  # created here: honours COLUMNS
