"""``service_state``: the TMF638 services' ids and states, the inventory's narrow read contract.

Reconciliation (the operations component) compares them with the sagas' outcomes. In a split
cluster operations is granted SELECT on this view only (components/database.py), not on the
inventory's documents, which hold customers, orders and places. The view belongs to the
inventory: created with its tables at provisioning, and by reconciliation's wiring where every
component shares one schema.
"""

from __future__ import annotations

from strowger.store.db import TableSet

# serviceInventory/service: SERVICE_INVENTORY_API's collection (tests/integration/test_reconciliation.py)
SERVICE_STATE_VIEW = TableSet(
    "service-states",
    sqlite=[
        "CREATE VIEW IF NOT EXISTS service_state AS SELECT id, json_extract(body, '$.state') AS state "
        "FROM tmf_resource WHERE collection = 'serviceInventory/service'"
    ],
    postgresql=[
        "CREATE OR REPLACE VIEW service_state AS SELECT id, body ->> 'state' AS state "
        "FROM tmf_resource WHERE collection = 'serviceInventory/service'"
    ],
)
