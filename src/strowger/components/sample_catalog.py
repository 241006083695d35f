"""The sample telco catalog shipped with Strowger (data in ``sample_catalog.json``).

Offerings: Fibre 500, Fibre 1000, Mobile 20 GB, a Static IP add-on and the
Fibre 500 + Mobile 20 GB bundle, in the Residential category of one catalog,
with their EUR prices (monthly recurring and one-off activation), as TMF620
documents; the TMF633 service and TMF634 resource
specifications they decompose into; and the ROM resource pools (``resourcePool``:
Strowger's own shape, see docs/fulfilment-model.md) those resources come from.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from strowger.components.decomposition import Catalog

COLLECTIONS = (
    "productSpecification",
    "productOffering",
    "productOfferingPrice",
    "category",
    "catalog",
    "serviceSpecification",
    "resourceSpecification",
    "resourcePool",
)


@cache
def _text() -> str:
    return resources.files("strowger.components").joinpath("sample_catalog.json").read_text(encoding="utf-8")


def sample_documents() -> dict[str, list[dict[str, Any]]]:
    """A fresh copy of every sample document, by TMF collection name (safe to mutate)."""
    data = json.loads(_text())
    return {name: data[name] for name in COLLECTIONS}


def sample_catalog() -> Catalog:
    """The sample catalog, indexed for :func:`strowger.components.decomposition.decompose`."""
    return Catalog.from_documents(sample_documents())


def sample_pools() -> list[dict[str, Any]]:
    """The sample ROM pool definitions (for ``resource_ordering.pools.pools_from_data``)."""
    return sample_documents()["resourcePool"]
