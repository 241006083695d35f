"""Drive a platform over HTTP: submit orders, wait until each one is settled, measure, check invariants.

Everything goes through the public APIs (TMF622 orders, the activation simulator's
fault endpoint, ``/sagas``, TMF678 rates), so the same code drives an in-process
platform or one started with ``make run``. What HTTP cannot show (pool slots, outbox
rows) comes from an optional :class:`LocalProbe` on the platform's own database.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson

from strowger.components.billing.pricing import PriceBook, charge_lines
from strowger.components.ordering.aggregate import FINAL_STATES
from strowger.components.sample_catalog import sample_documents
from strowger.demo.orders import DEMO_MIX, OrderGenerator, expected_pooled_resources, step_failure_rate
from strowger.events.envelope import parse_time
from strowger.store.db import Database

ORDERS = "/tmf-api/productOrderingManagement/v4/productOrder"
RATES = "/tmf-api/customerBillManagement/v4/appliedCustomerBillingRate"
FAULTS = "/activation/faults"
SAGAS = "/sagas"
TERMINAL = frozenset(state.value for state in FINAL_STATES)
PAGE = 1000
POLL_INTERVAL = 0.25
SETTLE_TIMEOUT = 20.0  # seconds for choreography (billing, pool releases) to catch up after the last order

Progress = Callable[[int, int, int], None]  # (submitted, settled, total)
# Errors raised before a request left: the order surely does not exist, submitting again is safe.
SURELY_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
UNCONFIRMED = "not found after a lost answer: "  # sent, the answer lost, and no order has its externalId
ANSWER_LOST_PAUSE = 1.0  # seconds before looking for an order whose answer was lost


@dataclass
class OrderRecord:
    """One submitted order, as the demo saw it."""

    offering: str
    id: str = ""
    state: str = ""
    order_date: str = ""
    completion_date: str = ""
    error: str = ""  # why submission failed
    reason: str = ""  # why it ended as it did: the order's last note (set for terminal orders)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def duration_ms(self) -> float | None:
        """orderDate → completionDate, as the platform stamped them (milliseconds)."""
        if not (self.order_date and self.completion_date):
            return None
        delta = parse_time(self.completion_date) - parse_time(self.order_date)
        return delta.total_seconds() * 1000.0


@dataclass(frozen=True)
class Invariant:
    name: str
    ok: bool | None  # None: not checkable against this platform
    detail: str


@dataclass
class DemoResult:
    orders: list[OrderRecord]
    step_failure_rate: float
    submit_seconds: float = 0.0
    total_seconds: float = 0.0
    quarantined: int = 0
    events_published: int | None = None
    charges: Decimal = Decimal("0.00")
    credits: Decimal = Decimal("0.00")
    invariants: list[Invariant] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for order in self.orders if order.state == state)

    @property
    def rejected_submissions(self) -> int:
        return sum(1 for order in self.orders if order.error)

    def reasons(self, state: str) -> Counter[str]:
        """Orders that ended in ``state``, per reason (ids and numbers masked, so alike ones add up)."""
        return Counter(reason_class(order.reason) for order in self.orders if order.state == state)

    def durations_ms(self, state: str | None = None) -> list[float]:
        values = (order.duration_ms() for order in self.orders if state is None or order.state == state)
        return sorted(value for value in values if value is not None)

    @property
    def ok(self) -> bool:
        return all(invariant.ok is not False for invariant in self.invariants)


_VARYING = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}|[A-Z]+-[0-9a-f]{6,}[\w-]*|\d+(\.\d+)?")


def reason_class(reason: str) -> str:
    """``reason`` with what differs between orders masked (ids, numbers), cut to 120 characters."""
    masked = _VARYING.sub("#", reason.strip()) or "(no reason recorded)"
    return masked if len(masked) <= 120 else masked[:119] + "…"


def last_note(document: Mapping[str, Any]) -> str:
    """The text of an order's last note: COM writes the reason of a state change there (TMF622)."""
    notes = document.get("note") or []
    last = notes[-1] if isinstance(notes, list) and notes else {}
    return str(last.get("text") or "") if isinstance(last, dict) else ""


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class LocalProbe:
    """Reads the in-process platform's database: outbox rows and pool slots (HTTP shows neither)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def outbox_rows(self) -> int:
        return await self._count("SELECT COUNT(*) FROM outbox")

    async def allocated_slots(self) -> int:
        return await self._count("SELECT COUNT(*) FROM resource_pool_slot WHERE request_id IS NOT NULL")

    async def order_states(self, terminal_ids: set[str]) -> dict[str, tuple[str, str, str]]:
        """(state, completionDate, reason) of every product order, from COM's ``product_order_view``.

        That table is written in the order's own transaction, so it never lags the order
        (the HTTP list may be served by a projection a moment behind). Bodies are parsed only
        for orders that turned terminal since the last call.
        """
        rows = await self.database.fetchall("SELECT id, state FROM product_order_view")
        states = {str(order_id): (str(state), "", "") for order_id, state in rows}
        new = [
            order_id
            for order_id, (state, _, _) in states.items()
            if state in TERMINAL and order_id not in terminal_ids
        ]
        for order_id in new:
            row = await self.database.fetchone(
                "SELECT body FROM product_order_view WHERE id = ?", (order_id,)
            )
            body = row[0] if row else {}
            document = orjson.loads(body) if isinstance(body, (str, bytes)) else body
            completed = str(document.get("completionDate") or "")
            states[order_id] = (states[order_id][0], completed, last_note(document))
        return states

    async def _count(self, sql: str) -> int:
        row = await self.database.fetchone(sql)
        return int(row[0]) if row else 0


class DemoDriver:
    """One demo run against the platform behind ``client`` (base URL and API key already set)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        probe: LocalProbe | None = None,
        mix: Mapping[str, float] = DEMO_MIX,
        concurrency: int = 32,
        seed: int | None = None,
        timeout: float = 300.0,
        pace: float | None = None,
        max_open: int | None = None,
    ) -> None:
        self.client = client
        self.probe = probe
        self.mix = mix
        self.concurrency = concurrency
        self.generator = OrderGenerator(mix, seed)
        self.timeout = timeout
        self.pace = pace  # orders per second, or None: as fast as ``concurrency`` allows
        # at most this many orders submitted and not yet terminal: a load the platform keeps up
        # with, rather than a backlog that outlasts the saga's step timeouts (None: no limit)
        self.max_open = max_open
        self.category = f"demo-{uuid.uuid4().hex[:8]}"  # tells this run's orders from any other

    async def run(self, orders: int, failure_rate: float, progress: Progress | None = None) -> DemoResult:
        report = progress or (lambda submitted, settled, total: None)
        result = DemoResult([], step_failure_rate(failure_rate, self.mix))
        baseline = await self._baseline()
        previous_faults = await self._set_faults(result.step_failure_rate)
        started = time.perf_counter()
        try:
            submitting = asyncio.create_task(self._submit_all(result, orders, report, started))
            try:
                await self._wait_settled(result, report, submitting, orders)
            finally:
                submitting.cancel()
            result.total_seconds = time.perf_counter() - started
        finally:
            await self._restore_faults(previous_faults)
        await self._settle_invariants(result, baseline)
        return result

    # -- submission ------------------------------------------------------------------------------

    async def _submit_all(self, result: DemoResult, orders: int, report: Progress, started: float) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        answered = 0

        async def submit(record: OrderRecord, body: dict[str, Any]) -> None:
            nonlocal answered
            async with gate:
                await self._submit(record, body)
            answered += 1
            report(answered, 0, orders)

        tasks = []
        for index in range(orders):
            if self.pace:  # open loop: each order leaves on schedule, whatever the previous ones do
                await asyncio.sleep(max(0.0, started + index / self.pace - time.perf_counter()))
            await self._room_for_one_more(result)
            body = self.generator.order()
            body["category"] = self.category
            record = OrderRecord(offering=body["productOrderItem"][0]["productOffering"]["id"])
            result.orders.append(record)
            tasks.append(asyncio.create_task(submit(record, body)))
        await asyncio.gather(*tasks)
        result.submit_seconds = time.perf_counter() - started

    async def _adopt(self, record: OrderRecord, reference: str) -> bool:
        """Whether an order with ``externalId == reference`` exists; if so ``record`` becomes it."""
        await asyncio.sleep(ANSWER_LOST_PAUSE)  # a request still being handled commits meanwhile
        params = {"externalId": reference, "fields": "id,state,orderDate,externalId"}
        try:
            response = await self.client.get(ORDERS, params=params)
            found = response.json() if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return False
        if not found:
            return False
        created = found[0]
        record.id, record.state, record.order_date = created["id"], created["state"], created["orderDate"]
        return True

    async def _room_for_one_more(self, result: DemoResult) -> None:
        """Until fewer than ``max_open`` orders are open (``_wait_settled`` refreshes their states)."""
        while True:
            if not self.max_open or sum(not order.terminal for order in result.orders) < self.max_open:
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def _submit(self, record: OrderRecord, body: dict[str, Any]) -> None:
        # The client's own reference (TMF622 externalId): if the answer to the POST is lost, the
        # order may exist all the same, and this is how a client finds it instead of guessing.
        reference = body.setdefault("externalId", uuid.uuid4().hex)
        try:
            response = await self.client.post(ORDERS, json=body)
        except SURELY_NOT_SENT as error:
            record.error = f"{type(error).__name__}: {error}"
            return
        except httpx.TransportError as error:  # sent, answer lost: accepted or not, nobody knows yet
            if not await self._adopt(record, reference):
                record.error = f"{UNCONFIRMED}{type(error).__name__}: {error}"
            return
        if response.status_code != 201:
            record.error = f"HTTP {response.status_code}: {response.text[:200]}"
            return
        created = response.json()
        record.id, record.state, record.order_date = created["id"], created["state"], created["orderDate"]

    # -- waiting ---------------------------------------------------------------------------------

    async def _wait_settled(
        self, result: DemoResult, report: Progress, submitting: asyncio.Task[None], total: int
    ) -> None:
        """Until every order is submitted, then terminal or held by a quarantined saga (or the timeout)."""
        deadline = time.monotonic() + self.timeout
        while True:
            finished_submitting = submitting.done()
            if finished_submitting:
                submitting.result()  # a bug in submission surfaces here, not as a hang
            submitted = [order for order in result.orders if order.id]
            try:
                await self._refresh_states(submitted)
                open_orders = [order for order in submitted if not order.terminal]
                result.quarantined = await self._quarantined() if open_orders else 0
            except httpx.TransportError:  # a dropped connection while polling: poll again
                await asyncio.sleep(POLL_INTERVAL)
                continue
            settled = len(submitted) - len(open_orders) + min(result.quarantined, len(open_orders))
            report(len(submitted), settled, total)
            if (finished_submitting and settled >= len(submitted)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)

    async def _refresh_states(self, records: list[OrderRecord]) -> None:
        """The states; from the read model's table when local (listing over HTTP costs the platform)."""
        if not self.probe:
            await self._refresh(records)
            return
        terminal = {record.id for record in records if record.terminal}
        states = await self.probe.order_states(terminal)
        for record in records:
            if record.terminal or record.id not in states:
                continue
            record.state, record.completion_date, record.reason = states[record.id]

    async def _refresh(self, records: list[OrderRecord]) -> None:
        by_id = {record.id: record for record in records}
        params = {"category": self.category, "fields": "id,state,orderDate,completionDate,category,note"}
        for order in await self._list_all(ORDERS, params):
            record = by_id.get(str(order.get("id")))
            if record and not record.terminal:  # a terminal state is final: never step back
                record.state = str(order.get("state") or record.state)
                record.completion_date = str(order.get("completionDate") or "")
                record.reason = last_note(order) if record.terminal else ""

    async def _quarantined(self) -> int:
        response = await self.client.get(SAGAS, params={"status": "quarantined", "limit": PAGE})
        response.raise_for_status()
        return len(response.json())

    async def _list_all(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            response = await self.client.get(path, params={**params, "offset": len(items), "limit": PAGE})
            response.raise_for_status()
            page = response.json()
            items.extend(page)
            if len(page) < PAGE:
                return items

    # -- faults ----------------------------------------------------------------------------------

    async def _set_faults(self, rate: float) -> dict[str, Any]:
        current = await self.client.get(FAULTS)
        current.raise_for_status()
        changed = await self.client.put(FAULTS, json={"failure_rate": rate, "failure_mode": "permanent"})
        changed.raise_for_status()
        return dict(current.json())

    async def _restore_faults(self, previous: dict[str, Any]) -> None:
        keep = {key: previous[key] for key in ("failure_rate", "failure_mode") if key in previous}
        if keep:
            await self.client.put(FAULTS, json=keep)

    # -- invariants ------------------------------------------------------------------------------

    async def _baseline(self) -> dict[str, int]:
        if not self.probe:
            return {}
        return {"outbox": await self.probe.outbox_rows(), "slots": await self.probe.allocated_slots()}

    async def _settle_invariants(self, result: DemoResult, baseline: Mapping[str, int]) -> None:
        """Billing and pool releases follow order completion by choreography: give them time to land."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            result.invariants = await self._invariants(result, baseline)
            if result.ok or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if self.probe:
            result.events_published = await self.probe.outbox_rows() - baseline["outbox"]

    async def _invariants(self, result: DemoResult, baseline: Mapping[str, int]) -> list[Invariant]:
        return [
            self._all_settled(result),
            await self._no_leak(result, baseline),
            await self._billing(result),
        ]

    @staticmethod
    def _all_settled(result: DemoResult) -> Invariant:
        submitted = [order for order in result.orders if order.id]
        open_orders = sum(1 for order in submitted if not order.terminal)
        ok = open_orders <= result.quarantined and not result.rejected_submissions
        detail = f"{len(submitted) - open_orders} terminal, {result.quarantined} quarantined"
        if open_orders > result.quarantined:
            detail += f", {open_orders - result.quarantined} still open"
        if result.rejected_submissions:
            detail += f", {result.rejected_submissions} submissions refused"
        return Invariant("every order terminal or quarantined", ok, detail)

    async def _no_leak(self, result: DemoResult, baseline: Mapping[str, int]) -> Invariant:
        name = "no resource leaked (allocated pool values == resources of completed orders)"
        if not self.probe:
            return Invariant(name, None, "not checked: pool slots are not visible over HTTP")
        completed = [order.offering for order in result.orders if order.state == "completed"]
        expected = expected_pooled_resources(completed)
        allocated = await self.probe.allocated_slots() - baseline["slots"]
        return Invariant(name, allocated == expected, f"{allocated} allocated, {expected} expected")

    async def _billing(self, result: DemoResult) -> Invariant:
        """Per order: charges - credits == its prices if completed, 0 otherwise."""
        name = "charges - credits == prices of completed orders (0 for failed)"
        nets, charges, credits = await self._billed_by_order(
            {order.id for order in result.orders if order.id}
        )
        result.charges, result.credits = charges, credits
        book = _price_book()
        wrong = []
        for order in result.orders:
            if not order.id:
                continue
            expected = _price_of(order, book) if order.state == "completed" else Decimal("0.00")
            if nets.get(order.id, Decimal("0.00")) != expected:
                wrong.append(order.id)
        expected_total = sum((_price_of(o, book) for o in result.orders if o.state == "completed"), Decimal())
        detail = f"net {charges - credits} EUR, expected {expected_total} EUR"
        if wrong:
            detail += f"; {len(wrong)} orders off, e.g. {wrong[0]}"
        return Invariant(name, not wrong, detail)

    async def _billed_by_order(self, order_ids: set[str]) -> tuple[dict[str, Decimal], Decimal, Decimal]:
        """Net per order and the run's charges and credits, from the TMF678 applied rates."""
        nets: dict[str, Decimal] = {}
        charges = credits = Decimal("0.00")
        for rate in await self._list_all(RATES, {"fields": "id,taxExcludedAmount,product"}):
            product = str((rate.get("product") or {}).get("id") or "")
            order_id = product.rsplit("-", 1)[0]
            if order_id not in order_ids:
                continue
            amount = Decimal(str((rate.get("taxExcludedAmount") or {}).get("value", 0))).quantize(
                Decimal("0.01")
            )
            nets[order_id] = nets.get(order_id, Decimal("0.00")) + amount
            if amount >= 0:
                charges += amount
            else:
                credits -= amount
        return nets, charges, credits


def _price_book() -> PriceBook:
    documents = sample_documents()
    return PriceBook.from_documents(documents["productOffering"], documents["productOfferingPrice"])


def _price_of(order: OrderRecord, book: PriceBook) -> Decimal:
    """What billing should charge for a completed order of the sample catalog."""
    document = {
        "id": order.id,
        "billingAccount": {"id": "BA"},
        "productOrderItem": [
            {"id": "1", "action": "add", "state": "completed", "productOffering": {"id": order.offering}}
        ],
    }
    return sum((line.amount for line in charge_lines(document, book)), Decimal("0.00"))


def outcome_counts(result: DemoResult) -> Counter[str]:
    return Counter(order.state or "not submitted" for order in result.orders)
