"""Plugs the billing choreography into a :class:`~strowger.bootstrap.Platform`.

The TMF678 API itself is mounted with the other TMF APIs (``bootstrap._tmf_apis``);
this adds the ledger table and the consumer that charges and credits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.charging import BILLING_TABLES, BillingLedger
from strowger.components.billing.consumers import billing_consumer
from strowger.tmf.resources import RESOURCE_TABLES

if TYPE_CHECKING:
    from strowger.bootstrap import Platform


def install(platform: Platform) -> BillingLedger:
    """The ledger (tables created at start) and the ``billing`` consumer group."""
    ledger = BillingLedger(platform.database, CustomerBilling(platform.database, platform.sink("billing")))
    platform.add_tables(BILLING_TABLES, RESOURCE_TABLES)
    platform.add_consumer(billing_consumer(ledger))
    return ledger
