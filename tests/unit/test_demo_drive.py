"""The demo driver's pure parts: the open-order window and failure reasons."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from strowger.demo.drive import (
    POLL_INTERVAL,
    UNCONFIRMED,
    DemoDriver,
    DemoResult,
    OrderRecord,
    last_note,
    reason_class,
)

pytestmark = pytest.mark.unit


async def test_submission_waits_while_max_open_orders_are_open() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404))) as client:
        driver = DemoDriver(client, max_open=2)
        result = DemoResult(
            [
                OrderRecord("PO-1", id="1", state="inProgress"),
                OrderRecord("PO-1", id="2", state="acknowledged"),
            ],
            0.0,
        )
        waiting = asyncio.create_task(driver._room_for_one_more(result))
        await asyncio.sleep(POLL_INTERVAL * 3)
        assert not waiting.done()  # two open orders: the window is full
        result.orders[0].state = "failed"
        await asyncio.wait_for(waiting, timeout=5)


async def test_without_a_window_submission_never_waits() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404))) as client:
        result = DemoResult([OrderRecord("PO-1", id=str(n), state="inProgress") for n in range(100)], 0.0)
        await asyncio.wait_for(DemoDriver(client)._room_for_one_more(result), timeout=1)


def test_failure_reasons_add_up_once_ids_and_numbers_are_masked() -> None:
    result = DemoResult(
        [
            OrderRecord(
                "PO-1",
                id="1",
                state="failed",
                reason="step allocate of SO-4f1a2b3c timed out after 3 attempts",
            ),
            OrderRecord(
                "PO-1",
                id="2",
                state="failed",
                reason="step allocate of SO-9e8d7c6b timed out after 3 attempts",
            ),
            OrderRecord("PO-1", id="3", state="failed", reason=""),
            OrderRecord("PO-1", id="4", state="completed", reason="done"),
        ],
        0.0,
    )
    assert result.reasons("failed") == {
        "step allocate of # timed out after # attempts": 2,
        "(no reason recorded)": 1,
    }
    assert reason_class("x" * 300).endswith("…") and len(reason_class("x" * 300)) == 120


def test_the_reason_is_the_last_note_of_the_order() -> None:
    document = {"note": [{"text": "accepted"}, {"text": "saga failed: pool exhausted"}]}
    assert last_note(document) == "saga failed: pool exhausted"
    assert last_note({}) == "" and last_note({"note": "not a list"}) == ""


def _platform_that_loses_the_answer(orders: dict[str, dict[str, str]]) -> httpx.MockTransport:
    """Creates the order, then drops the connection before answering; lists orders by externalId."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = orjson.loads(request.content)
            orders[body["externalId"]] = {
                "id": "PO-1",
                "state": "acknowledged",
                "orderDate": "2026-11-27T00:00:00Z",
            }
            raise httpx.ReadError("connection reset", request=request)
        wanted = request.url.params.get("externalId", "")
        return httpx.Response(200, json=[orders[wanted]] if wanted in orders else [])

    return httpx.MockTransport(handle)


async def test_an_order_whose_answer_was_lost_is_found_by_its_external_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("strowger.demo.drive.ANSWER_LOST_PAUSE", 0.0)
    orders: dict[str, dict[str, str]] = {}
    async with httpx.AsyncClient(
        transport=_platform_that_loses_the_answer(orders), base_url="http://p"
    ) as client:
        record = OrderRecord("PO-1")
        await DemoDriver(client)._submit(record, {"productOrderItem": []})
    assert (record.id, record.state, record.error) == ("PO-1", "acknowledged", "")
    assert len(orders) == 1  # submitted once, not twice


async def test_a_lost_answer_with_no_order_behind_it_is_marked_unconfirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("strowger.demo.drive.ANSWER_LOST_PAUSE", 0.0)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json=[])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://p") as client:
        record = OrderRecord("PO-1")
        await DemoDriver(client)._submit(record, {"productOrderItem": []})
    assert record.id == "" and record.error.startswith(UNCONFIRMED)
