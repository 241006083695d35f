"""``strowger trace <orderId|correlationId>``: everything that happened for one order, as a timeline."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import typer
from rich.console import Console

from strowger.ops.trace_timeline import TRACE_TABLES, Timeline, TraceStore, render_timeline
from strowger.settings import load_settings
from strowger.store.db import open_database

console = Console()


async def _timeline(trace_id: str) -> Timeline:
    async with open_database(load_settings().database_url) as database:
        await database.create_tables(TRACE_TABLES)
        return await TraceStore(database).timeline(trace_id)


def trace(
    trace_id: Annotated[str, typer.Argument(help="an order id, a correlation id or an event id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the timeline as one JSON line")] = False,
) -> None:
    """Show every hop of one order across all components, in order, with per-hop latency."""
    timeline = asyncio.run(_timeline(trace_id))
    if not timeline.hops:
        typer.echo(f"strowger: nothing recorded for {trace_id}", err=True)
        raise typer.Exit(code=1)
    if as_json:
        print(orjson.dumps(timeline.to_json()).decode())
    else:
        console.print(render_timeline(timeline))
