"""TMF678 Customer Bill Management v4: bills and applied rates, declared on the TMF toolkit.

The spec makes both resources read-mostly: ``appliedCustomerBillingRate`` is
list/retrieve only and ``customerBill`` adds a PATCH limited to
``CustomerBill_Update`` (``state``, ``billCycle`` and the ``@`` attributes).
Charges, credits and bills are produced by the billing component through
:class:`CustomerBilling`, inside its own transaction.

The v4 Swagger defines no notification; the user guide names
``CustomerBillCreateEvent`` and ``CustomerBillStateChangeEvent``, which are
emitted on ``bss.billing.events``. Applied rates emit nothing (the billing
component that records them publishes its own facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import APIRouter

from strowger.events.topics import BILLING_EVENTS
from strowger.store.db import Database, Transaction
from strowger.tmf.hubs import CallbackGuard
from strowger.tmf.resources import (
    Document,
    EventKind,
    EventSink,
    Lifecycle,
    Operation,
    ResourceType,
    TmfApi,
    load_definitions,
    openapi_schemas,
    spec_validator,
)
from strowger.tmf.router import tmf_router
from strowger.tmf.writer import ResourceWriter

BASE_PATH = "/tmf-api/customerBillManagement/v4"
_SCHEMA_FILE = "tmf678-v4.0.0-schemas.json"

# CustomerBillStateType (TMF678 user guide): a new bill may be put on hold before it is
# validated and sent; payments then make it partiallyPaid and finally settled.
CUSTOMER_BILL_STATE = Lifecycle(
    attribute="state",
    initial="new",
    transitions={
        "new": frozenset({"onHold", "validated"}),
        "onHold": frozenset({"new", "validated"}),
        "validated": frozenset({"onHold", "sent"}),
        "sent": frozenset({"partiallyPaid", "settled"}),
        "partiallyPaid": frozenset({"settled"}),
        "settled": frozenset(),
    },
)

_READ = frozenset({Operation.LIST, Operation.RETRIEVE})


@cache
def definitions() -> Mapping[str, Any]:
    """The TMF678 JSON Schema definitions (Swagger 2 form)."""
    return load_definitions(__package__ or "strowger.components.billing", _SCHEMA_FILE)


def _server_managed(resource: str, update: str) -> frozenset[str]:
    """Attributes of ``resource`` a client may not PATCH: all but those of the ``_Update`` schema."""
    every = set(definitions()[resource]["properties"])
    return frozenset(every - set(definitions()[update]["properties"]))


CUSTOMER_BILL = ResourceType(
    name="customerBill",
    type_name="CustomerBill",
    validate=spec_validator(definitions(), "CustomerBill"),
    read_only=_server_managed("CustomerBill", "CustomerBill_Update"),
    lifecycle=CUSTOMER_BILL_STATE,
    events=frozenset({EventKind.CREATE, EventKind.STATE_CHANGE}),
    schema_name="CustomerBill",
    operations=_READ | {Operation.PATCH},
)

APPLIED_CUSTOMER_BILLING_RATE = ResourceType(
    name="appliedCustomerBillingRate",
    type_name="AppliedCustomerBillingRate",
    validate=spec_validator(definitions(), "AppliedCustomerBillingRate"),
    last_update=None,  # the spec has no lastUpdate; ``date`` is the rate's own creation date
    events=frozenset(),
    schema_name="AppliedCustomerBillingRate",
    operations=_READ,
)

CUSTOMER_BILL_API = TmfApi(
    name="customerBillManagement",
    base_path=BASE_PATH,
    title="TMF678 Customer Bill Management",
    version="4.0.0",
    resources=(CUSTOMER_BILL, APPLIED_CUSTOMER_BILLING_RATE),
    topic=BILLING_EVENTS.name,
    producer="billing",
    schemas=openapi_schemas(definitions()),
)


def customer_bill_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """TMF678 (``customerBill``, ``appliedCustomerBillingRate``, ``/hub``, openapi) under ``BASE_PATH``."""
    return tmf_router(CUSTOMER_BILL_API, database, event_sink, guard or CallbackGuard())


class CustomerBilling:
    """The billing component's write path for TMF678 resources, inside its own transaction.

    ``record_rate`` and ``record_bill`` are idempotent upserts keyed by ``id``
    (a rate or bill without an id gets a new one), so a replayed rating or
    bill-run event does not double-charge.
    """

    def __init__(self, database: Database, event_sink: EventSink) -> None:
        self.rates = ResourceWriter(CUSTOMER_BILL_API, APPLIED_CUSTOMER_BILLING_RATE, database, event_sink)
        self.bills = ResourceWriter(CUSTOMER_BILL_API, CUSTOMER_BILL, database, event_sink)

    async def ensure_tables(self) -> None:
        """Create the storage tables (once, at start-up)."""
        await self.bills.ensure_tables()

    async def record_rate(self, tx: Transaction, rate: Mapping[str, Any]) -> Document:
        """Record a charge or credit (an AppliedCustomerBillingRate)."""
        return await self.rates.upsert(tx, rate)

    async def record_bill(self, tx: Transaction, bill: Mapping[str, Any]) -> Document:
        """Record a bill (CustomerBillCreateEvent when new); its ``state`` moves must be legal."""
        return await self.bills.upsert(tx, bill)

    async def set_bill_state(self, tx: Transaction, bill_id: str, state: str) -> Document:
        """Move a bill to ``state`` (CustomerBillStateChangeEvent); InvalidStateTransition if illegal."""
        return await self.bills.set_state(tx, bill_id, state)
