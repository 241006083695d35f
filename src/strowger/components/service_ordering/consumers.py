"""SOM's event handlers and its saga scheduler.

* ``service-ordering`` reads ``bss.ordering.events``: a product order that went
  ``inProgress`` gets a service order and a saga; ``CancelProductOrderCreateEvent``
  cancels that saga (COM waits for the ``cancelled`` service order).
* ``service-ordering-replies`` reads the executors' replies (``oss.resource.events``,
  ``oss.service.events``) and hands them to the saga engine.
* :func:`run_scheduler` ticks the engine (timeouts, retries, stuck sagas) every second.

Handlers run on the consumer runtime: inbox dedup, retries on transient errors,
dead letters; each decides inside the handler's transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.components.contract import ORDERING_EVENTS, RESOURCE_EVENTS, SERVICE_EVENTS
from strowger.components.service_ordering.saga import REPLY_TYPES
from strowger.components.service_ordering.service import ServiceOrdering
from strowger.errors import ConcurrencyConflict
from strowger.events.envelope import Envelope

log = logging.getLogger("strowger.service_ordering")

ORDER_STARTED = "ProductOrderStateChangeEvent"
ORDER_CANCELLATION = "CancelProductOrderCreateEvent"


def product_order_consumer(som: ServiceOrdering) -> Consumer:
    """Starts fulfilment of product orders in progress and cancels it on request.

    A batch handler: the sagas the batch cancels are locked first, in id order, so it
    cannot deadlock with a batch of replies or the scheduler changing the same sagas.
    """

    async def handle(envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
        await som.lock_cancelled(uow.tx, envelopes)
        for envelope in envelopes:
            if envelope.event_type == ORDER_STARTED:
                await som.on_product_order(uow.tx, envelope)
            elif envelope.event_type == ORDER_CANCELLATION:
                await som.on_product_order_cancellation(uow.tx, envelope)

    return Consumer(
        name="service-ordering",
        topics=(ORDERING_EVENTS,),
        batch_handler=handle,
        event_types=frozenset({ORDER_STARTED, ORDER_CANCELLATION}),
    )


def reply_consumer(som: ServiceOrdering) -> Consumer:
    """Applies the executors' replies to the fulfilment sagas (duplicates and late replies are ignored).

    A batch handler: the batch's sagas are locked first, in id order (see ``SagaStore.lock``).
    """

    async def handle(envelopes: Sequence[Envelope], uow: UnitOfWork) -> None:
        await som.on_replies(uow.tx, envelopes)

    return Consumer(
        name="service-ordering-replies",
        topics=(RESOURCE_EVENTS, SERVICE_EVENTS),
        batch_handler=handle,
        event_types=REPLY_TYPES,
    )


async def tick_once(som: ServiceOrdering) -> None:
    """One scheduler pass in its own transaction; a race with another replica is retried next pass."""
    try:
        async with som.database.transaction() as tx:
            report = await som.tick(tx)
    except ConcurrencyConflict as conflict:
        log.info("saga tick raced another scheduler; next pass retries: %s", conflict)
        return
    if report.advanced or report.stuck:
        log.info(
            "saga tick: %d advanced, %d stuck, %d sent", len(report.advanced), len(report.stuck), report.sent
        )


async def run_scheduler(som: ServiceOrdering, interval: float = 1.0) -> None:
    """Tick forever (until cancelled); an unexpected error is logged and the next pass runs."""
    while True:
        try:
            await tick_once(som)
        except Exception:
            log.exception("saga tick failed; retrying in %.1fs", interval)
        await asyncio.sleep(interval)
