"""The ordering application service: commands and queries on ProductOrder aggregates.

Every command runs in ONE database transaction that appends the domain events
(``Repository.save``), writes their TMF notifications to the outbox (the
platform's event sink) and updates the read model: all three commit or none.
Commands from the API retry a few times on ConcurrencyConflict (another writer
appended to the same order first); commands from event handlers run in the
handler's transaction and let the runtime retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from strowger import logs
from strowger.components.ordering.aggregate import Change, ProductOrder
from strowger.components.ordering.notifications import TOPIC, notifications
from strowger.components.ordering.view import VIEW_TABLES, Document, OrderView
from strowger.errors import ConcurrencyConflict, NotFound
from strowger.events.envelope import format_time, new_id, utcnow
from strowger.store.aggregate import Repository
from strowger.store.db import Database, Transaction
from strowger.store.eventstore import EventStore
from strowger.tmf.query import Page, ResourceQuery
from strowger.tmf.resources import EventSink

log = logging.getLogger("strowger.ordering")

BASE_PATH = "/tmf-api/productOrderingManagement/v4"
CONFLICT_ATTEMPTS = 5
T = TypeVar("T")
Decision = Callable[[ProductOrder], T]


class OrderingService:
    """Places, changes, cancels and reads product orders."""

    def __init__(
        self,
        database: Database,
        store: EventStore,
        sink: EventSink,
        *,
        base_path: str = BASE_PATH,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.store = store
        self.sink = sink
        self.base_path = base_path
        self.clock = clock
        self.orders = Repository(store, ProductOrder)
        self.view = OrderView(database)

    async def setup(self) -> None:
        """Create the event store and view tables (idempotent; run at start-up)."""
        await self.store.setup()
        await self.database.create_tables(VIEW_TABLES)

    def order_href(self, order_id: str) -> str:
        return f"{self.base_path}/productOrder/{order_id}"

    def task_href(self, task_id: str) -> str:
        return f"{self.base_path}/cancelProductOrder/{task_id}"

    # -- commands -------------------------------------------------------------------

    async def place(self, body: dict[str, Any]) -> Document:
        """Accept a new order (message validation only).

        Its correlationId is the request's (``X-Correlation-ID``, set by the tracing middleware,
        so a CRM's own id follows the order through every component), else a new one.
        """
        order_id = new_id()
        correlation_id = logs.correlation_id.get() or new_id()
        order = ProductOrder.place(
            order_id, body, href=self.order_href(order_id), now=self.clock(), correlation_id=correlation_id
        )
        async with self.database.transaction() as tx:
            await self.commit(tx, order)
        return order.to_tmf()

    async def amend(self, order_id: str, build: Callable[[Document], Document]) -> Document:
        """Apply a PATCH: ``build`` turns the current resource into the one the client wants."""

        def decide(order: ProductOrder) -> Document:
            order.amend(build(order.to_tmf()), self.clock())
            return order.to_tmf()

        return await self.execute(order_id, decide)

    async def delete(self, order_id: str) -> None:
        await self.execute(order_id, lambda order: order.delete(self.clock()))

    async def request_cancellation(self, body: dict[str, Any]) -> Document:
        """Create a cancelProductOrder task for ``body["productOrder"]["id"]`` (NotFound if none)."""
        order_id = str(body["productOrder"]["id"])
        task_id = new_id()

        def decide(order: ProductOrder) -> Document:
            return order.request_cancellation(
                task_id, href=self.task_href(task_id), body=body, now=self.clock()
            )

        return await self.execute(order_id, decide)

    async def execute(self, order_id: str, decide: Decision[T]) -> T:
        """Load, decide, save in one transaction; reload and decide again on a concurrent append."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                async with self.database.transaction() as tx:
                    return await self.execute_in(tx, order_id, decide)
            except ConcurrencyConflict:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.info("order %s changed concurrently; retrying (attempt %d)", order_id, attempt)
        raise AssertionError("unreachable")

    async def execute_in(
        self, tx: Transaction, order_id: str, decide: Decision[T], *, causation_id: str = ""
    ) -> T:
        """Load, decide and save inside the caller's ``tx`` (event handlers)."""
        order = await self.load(order_id, tx=tx)
        result = decide(order)
        await self.commit(tx, order, causation_id=causation_id)
        return result

    async def commit(self, tx: Transaction, order: ProductOrder, *, causation_id: str = "") -> None:
        """Append the order's new events, write their notifications and the read model, all in ``tx``."""
        changes = order.take_changes()
        if not changes:
            return
        await self.orders.save(
            tx, order, correlation_id=order.correlation_id, causation_id=causation_id or None
        )
        for envelope in notifications(
            changes, correlation_id=order.correlation_id, causation_id=causation_id, now=self.clock()
        ):
            await self.sink.emit(tx, envelope, TOPIC)
        await self._refresh_view(tx, order, changes)

    async def _refresh_view(self, tx: Transaction, order: ProductOrder, changes: list[Change]) -> None:
        if order.deleted:
            await self.view.remove_order(tx, order.id)
            return
        await self.view.put_order(tx, order.document, order.version)  # only serialised: no copy
        # created_at is only written by the first insert of a task (the upsert keeps it).
        created = format_time(self.clock())
        for task_id in dict.fromkeys(change.task["id"] for change in changes if change.task is not None):
            await self.view.put_task(tx, order.cancel_tasks[task_id], created, order.version)

    # -- queries --------------------------------------------------------------------

    async def load(
        self, order_id: str, *, as_of: datetime | None = None, tx: Transaction | None = None
    ) -> ProductOrder:
        """The order (now, or as it was at ``as_of``); NotFound if it did not exist or was deleted."""
        order = await self.orders.load(order_id, as_of_time=as_of, tx=tx)
        if order.deleted:
            raise NotFound(f"productOrder {order_id!r} was deleted")
        return order

    async def get(self, order_id: str, *, as_of: datetime | None = None) -> Document:
        return (await self.load(order_id, as_of=as_of)).to_tmf()

    async def list(self, query: ResourceQuery) -> Page:
        return await self.view.orders(query)

    async def list_tasks(self, query: ResourceQuery) -> Page:
        return await self.view.tasks(query)

    async def get_task(self, task_id: str, *, as_of: datetime | None = None) -> Document:
        """The cancelProductOrder task (now, or as of a time: replayed from its order's events)."""
        task = await self.view.task(task_id)
        if task is not None and as_of is not None:
            task = await self._task_as_of(task, as_of)
        if task is None:
            raise NotFound(f"no cancelProductOrder with id {task_id!r}")
        return task

    async def _task_as_of(self, task: Document, as_of: datetime) -> Document | None:
        order = task.get("productOrder")
        order_id = str(order.get("id", "")) if isinstance(order, dict) else ""
        try:
            then = (await self.load(order_id, as_of=as_of)).cancel_tasks.get(str(task.get("id")))
        except NotFound:
            return None
        return then  # a fresh aggregate, replayed for this call: nobody else holds it
