"""SOM's application service: service orders (event-sourced) driven by the fulfilment saga.

Every method that changes something works in the caller's transaction (the
consumer's unit of work, the scheduler's tick, an API request) and does, in it:
the saga engine's step (state + commands in the outbox), the ServiceOrder's new
events, their TMF641 notifications and the read model row. So a crash leaves
either all of it or none, and a redelivered event finds the work already done.

The service order follows its saga (:meth:`ServiceOrdering.sync`):

=====================  ===============================================
saga status            service order
=====================  ===============================================
queued, running        ``inProgress``
compensating,          unchanged (``inProgress`` or ``assessingCancellation``)
quarantined
completed              ``completed``
failed, aborted        ``failed`` (``errorMessage`` says why)
cancelled              ``pendingCancellation`` → ``cancelled``
=====================  ===============================================
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from strowger.components.decomposition import Catalog, FulfilmentPlan, decompose
from strowger.components.ordering.states import ServiceOrderState, TaskState
from strowger.components.service_ordering.aggregate import (
    CancelServiceOrderStateChanged,
    Change,
    ServiceOrder,
    ServiceOrderCancellationRequested,
    ServiceOrderCreated,
    ServiceOrderStateChanged,
)
from strowger.components.service_ordering.saga import SAGA_TYPE, fulfilment_data
from strowger.errors import ConcurrencyConflict, InvalidStateTransition, NotFound, PermanentError
from strowger.events.envelope import Envelope, format_time, new_id, utcnow
from strowger.events.topics import SERVICE_EVENTS
from strowger.saga import (
    OperatorAction,
    ReplyResult,
    SagaEngine,
    SagaOperator,
    SagaState,
    SagaStatus,
    TickReport,
)
from strowger.store.aggregate import Repository
from strowger.store.db import Database, TableSet, Transaction
from strowger.store.eventstore import EventStore
from strowger.tmf.query import Page, ResourceQuery, apply_query
from strowger.tmf.resources import EventSink

log = logging.getLogger("strowger.service_ordering")

BASE_PATH = "/tmf-api/serviceOrdering/v4"
TOPIC = SERVICE_EVENTS.name
PRODUCER = "service-ordering"
DOMAIN = "serviceOrdering"
CONFLICT_ATTEMPTS = 5
# Service order ids derive from the product order id, so a product order that comes back to
# inProgress (a refused cancellation) or a redelivery finds its service order instead of a second one.
_ID_NAMESPACE = uuid.UUID("6b1d3c62-8f0e-4b8c-9a55-5f1f2c3a7e41")

CatalogSource = Callable[[Transaction], Awaitable[Catalog]]
Document = dict[str, Any]

VIEW_TABLES = TableSet(
    name="service-ordering-views",
    sqlite=[
        "CREATE TABLE IF NOT EXISTS service_order_view (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "order_id TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL)"
    ],
    postgresql=[
        "CREATE TABLE IF NOT EXISTS service_order_view (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "order_id TEXT NOT NULL, created_at TEXT NOT NULL, body JSONB NOT NULL)"
    ],
)
_UPSERT = (
    "INSERT INTO service_order_view (id, kind, order_id, created_at, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET body = excluded.body"
)
ORDER, TASK = "serviceOrder", "cancelServiceOrder"

_OUTCOMES = {
    SagaStatus.COMPLETED: ServiceOrderState.COMPLETED,
    SagaStatus.FAILED: ServiceOrderState.FAILED,
    SagaStatus.ABORTED: ServiceOrderState.FAILED,
    SagaStatus.CANCELLED: ServiceOrderState.CANCELLED,
}


# A cancel task still to be decided. COM creates it ``accepted`` (the v4 TaskStateType: the
# CancelProductOrderCreateEvent carries that state); v5 spells it ``acknowledged``.
_OPEN_CANCEL_TASK = frozenset({TaskState.ACCEPTED.value, "acknowledged", TaskState.IN_PROGRESS.value, None})


def service_order_id_for(product_order_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, product_order_id))


def _body(raw: Any) -> Document:
    loaded = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(loaded, dict):
        raise TypeError(f"a view row holds {type(loaded).__name__}, not an object")
    return loaded


class ServiceOrdering:
    """Creates service orders from product orders and keeps them in step with their sagas."""

    def __init__(
        self,
        database: Database,
        store: EventStore,
        sink: EventSink,
        engine: SagaEngine,
        catalog: CatalogSource,
        *,
        base_path: str = BASE_PATH,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.sink = sink
        self.engine = engine
        self.operator = SagaOperator(engine)
        self.catalog = catalog
        self.base_path = base_path
        self.clock = clock
        self.orders = Repository(store, ServiceOrder)

    def order_href(self, order_id: str) -> str:
        return f"{self.base_path}/serviceOrder/{order_id}"

    def task_href(self, task_id: str) -> str:
        return f"{self.base_path}/cancelServiceOrder/{task_id}"

    # -- event handlers (the caller's transaction) ---------------------------------------------

    async def on_product_order(self, tx: Transaction, event: Envelope) -> ServiceOrder | None:
        """A product order went ``inProgress``: create its service order and start the saga."""
        product_order = event.payload.get("productOrder")
        if not isinstance(product_order, Mapping) or product_order.get("state") != "inProgress":
            return None
        order_id = service_order_id_for(str(product_order["id"]))
        if await self._find(tx, order_id) is not None:
            return None  # back to inProgress after a refused cancellation, or a replay: already running
        now = self.clock()
        try:
            plans = await self._plans(tx, product_order)
        except PermanentError as error:
            # Validation decomposed it already; a catalog changed since then fails the order, visibly.
            order = ServiceOrder.create(
                order_id, self._document(order_id, product_order), now, correlation_id=event.correlation_id
            )
            order.conclude(ServiceOrderState.FAILED, now, f"decomposition failed: {error}")
            await self.commit(tx, order, event)
            return order
        document = self._document(order_id, product_order, plans)
        order = ServiceOrder.create(order_id, document, now, correlation_id=event.correlation_id)
        saga = await self.engine.start(
            tx,
            SAGA_TYPE,
            fulfilment_data(order_id, product_order, plans),
            saga_id=order_id,
            correlation_id=event.correlation_id,
            entity_key=order_id,
            cause=event,
        )
        order.start(self.clock())
        self._follow(order, saga)
        await self.commit(tx, order, event)
        return order

    async def lock_cancelled(self, tx: Transaction, events: Sequence[Envelope]) -> None:
        """Lock, in id order, the sagas these events cancel (before a batch changes any of them)."""
        await self.engine.store.lock(tx, [order_id for event in events if (order_id := _cancelled(event))])

    async def on_product_order_cancellation(self, tx: Transaction, event: Envelope) -> None:
        """COM asks to cancel a product order being fulfilled: cancel its service order."""
        task = event.payload.get("cancelProductOrder")
        if not isinstance(task, Mapping) or task.get("state") not in _OPEN_CANCEL_TASK:
            return  # COM cancelled it alone (not yet sent to fulfilment), or already decided
        product_order = task.get("productOrder") or {}
        order_id = service_order_id_for(str(product_order.get("id", "")))
        if await self._find(tx, order_id) is None:
            return  # never reached SOM: nothing to undo
        reason = str(task.get("cancellationReason") or "product order cancelled")
        try:
            await self.cancel_in(tx, order_id, reason=reason, requested=None, cause=event)
        except InvalidStateTransition as error:
            # Already final: the outcome event already told (or will tell) COM, which refuses the cancel.
            log.info("cancellation of %s not applied: %s", order_id, error)

    async def on_replies(self, tx: Transaction, replies: Sequence[Envelope]) -> list[ReplyResult]:
        """A batch of executors' replies in one transaction, their sagas locked first (in id order)."""
        causes = [reply.causation_id for reply in replies]
        await self.engine.store.lock(tx, await self.engine.store.sagas_of_commands(tx, causes))
        return [await self.on_reply(tx, reply) for reply in replies]

    async def on_reply(self, tx: Transaction, reply: Envelope) -> ReplyResult:
        """An executor's reply: advance the saga, then the service order, in ``tx``."""
        result = await self.engine.handle_reply(tx, reply)
        if result.applied:
            await self.sync(tx, result.saga_id, reply, result.state)
        return result

    async def tick(self, tx: Transaction, now: datetime | None = None) -> TickReport:
        """Timeouts, retries and stuck sagas; service orders follow the sagas that moved."""
        report = await self.engine.tick(tx, now)
        for saga_id in report.advanced:
            await self.sync(tx, saga_id, None)
        return report

    async def operate(
        self, tx: Transaction, saga_id: str, action: OperatorAction, *, actor: str, reason: str
    ) -> SagaState:
        """An audited operator action on a saga; its service order follows."""
        state = await self.operator.act(tx, saga_id, action, actor=actor, reason=reason)
        await self.sync(tx, saga_id, None)
        return state

    # -- cancellation --------------------------------------------------------------------------

    async def cancel(self, body: Mapping[str, Any]) -> Document:
        """POST /cancelServiceOrder: in its own transaction, retried on a concurrent change."""
        order_id = str((body.get("serviceOrder") or {}).get("id", ""))
        reason = str(body.get("cancellationReason") or "cancelled on request")
        requested = body.get("requestedCancellationDate")
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                async with self.database.transaction() as tx:
                    return await self.cancel_in(
                        tx, order_id, reason=reason, requested=str(requested) if requested else None
                    )
            except ConcurrencyConflict:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def cancel_in(
        self,
        tx: Transaction,
        order_id: str,
        *,
        reason: str,
        requested: str | None,
        cause: Envelope | None = None,
    ) -> Document:
        """Open a cancel task and cancel the saga (compensating what was done), in ``tx``."""
        order = await self.load(order_id, tx=tx)
        task_id = new_id()
        task = order.request_cancellation(
            task_id, href=self.task_href(task_id), reason=reason, requested=requested, now=self.clock()
        )
        saga = await self.engine.cancel(tx, order_id, reason, cause=cause)
        self._follow(order, saga)
        await self.commit(tx, order, cause)
        return order.cancel_tasks.get(task_id, task)

    # -- keeping the service order in step ------------------------------------------------------

    async def sync(
        self, tx: Transaction, saga_id: str, cause: Envelope | None, saga: SagaState | None = None
    ) -> None:
        """Make the service order reflect its saga's status (see the module docstring).

        ``saga``: its state as just saved, if the caller has it (saves reloading it).
        """
        saga = saga or await self.engine.get(tx, saga_id)
        if saga.status not in _OUTCOMES:
            return  # running or compensating: the order already shows it (no load, no write)
        order = await self._find(tx, saga_id)
        if order is None:
            return  # a saga of another type, or not SOM's
        self._follow(order, saga)
        await self.commit(tx, order, cause)

    def _follow(self, order: ServiceOrder, saga: SagaState) -> None:
        outcome = _OUTCOMES.get(saga.status)
        if outcome is not None:
            reason = saga.reason
            if saga.status is SagaStatus.ABORTED:
                reason = f"fulfilment aborted by an operator: {saga.reason}"
            order.conclude(outcome, self.clock(), reason)

    async def commit(self, tx: Transaction, order: ServiceOrder, cause: Envelope | None) -> None:
        """Append the order's new events, emit their notifications, refresh the view, all in ``tx``."""
        changes = order.take_changes()
        if not changes:
            return
        correlation = order.correlation_id or (cause.correlation_id if cause else "")
        await self.orders.save(
            tx, order, correlation_id=correlation or None, causation_id=cause.event_id if cause else None
        )
        now = self.clock()
        for change in changes:
            await self.sink.emit(tx, self._notification(order.id, change, correlation, cause, now), TOPIC)
        await self._put(tx, ORDER, order.id, order.id, order.to_tmf(), order.document["orderDate"])
        for task_id in dict.fromkeys(change.task["id"] for change in changes if change.task is not None):
            await self._put(tx, TASK, task_id, order.id, order.cancel_tasks[task_id], format_time(now))

    def _notification(
        self, order_id: str, change: Change, correlation: str, cause: Envelope | None, now: datetime
    ) -> Envelope:
        event_type, payload = _describe(change)
        return Envelope(
            event_type=event_type,
            payload=payload,
            entity_key=order_id,
            event_time=now,
            correlation_id=correlation,
            causation_id=cause.event_id if cause else "",
            traceparent=cause.traceparent if cause else "",
            producer=PRODUCER,
            domain=DOMAIN,
            title=event_type,
        )

    async def _put(
        self, tx: Transaction, kind: str, row_id: str, order_id: str, body: Mapping[str, Any], created: str
    ) -> None:
        await tx.execute(_UPSERT, (row_id, kind, order_id, created, orjson.dumps(body).decode()))

    # -- building the service order -------------------------------------------------------------

    async def _plans(self, tx: Transaction, product_order: Mapping[str, Any]) -> list[FulfilmentPlan]:
        catalog = await self.catalog(tx)
        return [decompose(item, catalog) for item in product_order.get("productOrderItem", ())]

    def _document(
        self, order_id: str, product_order: Mapping[str, Any], plans: list[FulfilmentPlan] | None = None
    ) -> Document:
        """The TMF641 serviceOrder for a product order: one item per service of the plans."""
        product_order_id = str(product_order["id"])
        data = fulfilment_data(order_id, product_order, plans or [])
        references: list[dict[str, Any]] = [
            {
                "externalReferenceType": "ProductOrder",
                "name": product_order_id,
                "href": product_order.get("href"),
            }
        ]
        references.extend(
            {"externalReferenceType": "ProductOrderItem", "name": str(item["id"])}
            for item in product_order.get("productOrderItem", ())
        )
        items = [
            {
                "id": str(index),
                "action": service["action"],
                "@type": "ServiceOrderItem",
                "service": {
                    "id": service["id"],
                    "name": service["name"],
                    "serviceSpecification": {
                        "id": service["specId"],
                        "@referredType": "ServiceSpecification",
                    },
                    "serviceCharacteristic": service["characteristics"],
                    "@type": "Service",
                },
            }
            for index, service in enumerate(data["services"], start=1)
        ]
        document: Document = {
            "href": self.order_href(order_id),
            "category": "fulfilment",
            "description": f"fulfilment of product order {product_order_id}",
            "externalReference": [{k: v for k, v in ref.items() if v is not None} for ref in references],
            "relatedParty": [_party(party) for party in product_order.get("relatedParty") or ()],
            "serviceOrderItem": items,
        }
        if product_order.get("priority") is not None:
            document["priority"] = product_order["priority"]
        return document

    # -- queries --------------------------------------------------------------------------------

    async def _find(self, tx: Transaction, order_id: str) -> ServiceOrder | None:
        try:
            return await self.orders.load(order_id, tx=tx)
        except NotFound:
            return None

    async def load(
        self, order_id: str, *, as_of: datetime | None = None, tx: Transaction | None = None
    ) -> ServiceOrder:
        """The service order (now, or as it was at ``as_of``, replayed); NotFound if there is none."""
        order = await self.orders.load(order_id, as_of_time=as_of, tx=tx)
        return order

    async def get(self, order_id: str, *, as_of: datetime | None = None) -> Document:
        return (await self.load(order_id, as_of=as_of)).to_tmf()

    async def list(self, kind: str, query: ResourceQuery) -> Page:
        rows = await self.database.fetchall(
            "SELECT body FROM service_order_view WHERE kind = ? ORDER BY created_at, id", (kind,)
        )
        return apply_query((_body(row[0]) for row in rows), query)

    async def get_task(self, task_id: str, *, as_of: datetime | None = None) -> Document:
        """The cancelServiceOrder task (now, or as of a time: replayed from its service order's events)."""
        row = await self.database.fetchone(
            "SELECT body, order_id FROM service_order_view WHERE kind = ? AND id = ?", (TASK, task_id)
        )
        if row is None:
            raise NotFound(f"no cancelServiceOrder with id {task_id!r}")
        if as_of is None:
            return _body(row[0])
        try:
            then = (await self.load(str(row[1]), as_of=as_of)).cancel_tasks.get(task_id)
        except NotFound:
            then = None
        if then is None:
            raise NotFound(f"no cancelServiceOrder with id {task_id!r} at {format_time(as_of)}")
        return then  # a fresh aggregate, replayed for this call: nobody else holds it


def _cancelled(event: Envelope) -> str:
    """The service order a CancelProductOrderCreateEvent names, or "" for any other event."""
    task = event.payload.get("cancelProductOrder")
    if not isinstance(task, Mapping) or not isinstance(task.get("productOrder"), Mapping):
        return ""
    return service_order_id_for(str(task["productOrder"].get("id", "")))


def _party(party: Mapping[str, Any]) -> dict[str, Any]:
    # TMF641's RelatedParty requires @type and @referredType, which TMF622 leaves optional.
    return {
        **party,
        "@type": party.get("@type") or "RelatedParty",
        "@referredType": party.get("@referredType") or "Party",
    }


def _describe(change: Change) -> tuple[str, dict[str, Any]]:
    match change.event:
        case ServiceOrderCreated():
            return "ServiceOrderCreateEvent", {"serviceOrder": change.order}
        case ServiceOrderStateChanged():
            return "ServiceOrderStateChangeEvent", {"serviceOrder": change.order}
        case ServiceOrderCancellationRequested():
            return "CancelServiceOrderCreateEvent", {"cancelServiceOrder": change.task}
        case CancelServiceOrderStateChanged():
            return "CancelServiceOrderStateChangeEvent", {"cancelServiceOrder": change.task}
    raise TypeError(f"no TMF641 notification for {type(change.event).__name__}")
