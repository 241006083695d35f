"""Reconciliation: inventories, sagas and resource pools compared; drift reported, safe cases repaired."""
