"""``strowger history <order-id>`` on a SQLite database holding a real order's events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from strowger.commands.history import history
from strowger.components.ordering.service import OrderingService
from strowger.events.envelope import Envelope
from strowger.store.db import Transaction, open_database
from strowger.store.eventstore import open_event_store

pytestmark = pytest.mark.integration


class DiscardingSink:
    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        return None


async def an_order_with_history(url: str) -> str:
    async with open_database(url) as database:
        service = OrderingService(database, open_event_store(database), DiscardingSink())
        await service.setup()
        order = await service.place({"productOrderItem": [{"id": "1", "action": "add"}]})
        await service.amend(order["id"], lambda current: {**current, "description": "gift"})
        await service.request_cancellation({"productOrder": {"id": order["id"]}})
        return str(order["id"])


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(history)
    app.command("noop")(lambda: None)  # two commands: typer then expects the command name
    return app


def test_history_prints_every_event_as_a_table_or_one_json_line(tmp_path: Path, cli: typer.Typer) -> None:
    url = f"sqlite:///{tmp_path}/history.db"
    order_id = asyncio.run(an_order_with_history(url))
    runner = CliRunner()
    env = {"STROWGER_DATABASE_URL": url}

    as_json = runner.invoke(cli, ["history", order_id, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    (line,) = as_json.output.strip().splitlines()
    document = orjson.loads(line)
    events = document["events"]
    assert document["productOrder"] == order_id
    assert [event["version"] for event in events] == list(range(1, len(events) + 1))
    assert events[0]["eventType"] == "ProductOrderAccepted"
    assert "ProductOrderAttributesChanged" in [event["eventType"] for event in events]
    assert events[-1]["eventType"] == "CancelProductOrderStateChanged"
    assert {event["correlationId"] for event in events} == {events[0]["correlationId"]}
    assert all(event["recordedAt"].endswith("Z") for event in events)

    table = runner.invoke(cli, ["history", order_id], env={**env, "COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "ProductOrderAccepted" in table.output and "cancelled" in table.output
    assert events[0]["correlationId"] in table.output

    missing = runner.invoke(cli, ["history", "nope"], env=env)
    assert missing.exit_code == 1
