"""Business validation of an accepted order against the catalog (TMF622 issue 6), pure plus one read.

Run asynchronously after acceptance: the API only checks the message, then a
consumer of ``ProductOrderCreateEvent`` calls :func:`validate_order` and moves
the order to ``inProgress`` or ``rejected``. The rules:

* every item's ``productOffering`` exists in the TMF620 catalog;
* an ``add`` item's offering is sellable: ``lifecycleStatus`` Active or Launched
  and ``isSellable`` not false;
* the item decomposes (``components/decomposition.py``): characteristics the
  offering declares, with allowed values, and a catalog chain that resolves;
* a party with role ``customer`` (any case) in ``relatedParty``;
* a ``billingAccount`` on the order, or on every item.

Product offerings, specifications and prices come from the TMF620 rows of
``tmf_resource`` (the ``catalog_resource`` view: in a split cluster the only part
of the catalog's schema other components are granted). Service and resource
specifications (TMF633/TMF634) have no API in Strowger yet: they are given as data
(the sample catalog's by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from strowger.components.catalog.api import CATALOG_API
from strowger.components.decomposition import Catalog, decompose
from strowger.components.sample_catalog import sample_documents
from strowger.errors import PermanentError
from strowger.store.db import Transaction

Document = Mapping[str, Any]

SELLABLE = frozenset({"Active", "Launched"})
CATALOG_COLLECTIONS = ("productOffering", "productSpecification", "productOfferingPrice")
TECHNICAL_COLLECTIONS = ("serviceSpecification", "resourceSpecification")


def sample_technical_catalog() -> dict[str, list[dict[str, Any]]]:
    """The sample TMF633 service and TMF634 resource specifications."""
    documents = sample_documents()
    return {name: documents[name] for name in TECHNICAL_COLLECTIONS}


async def read_catalog(tx: Transaction, technical: Mapping[str, Iterable[Document]] | None = None) -> Catalog:
    """The catalog as ``tx`` sees it: TMF620 documents from the tables plus ``technical`` specifications."""
    documents: dict[str, list[Document]] = {name: list(docs) for name, docs in (technical or {}).items()}
    for name in CATALOG_COLLECTIONS:
        rows = await tx.fetchall(
            "SELECT body FROM catalog_resource WHERE collection = ?", (f"{CATALOG_API.name}/{name}",)
        )
        documents[name] = [_body(row[0]) for row in rows]
    return Catalog.from_documents(documents)


def _body(raw: Any) -> Document:
    loaded: Document = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return loaded


def validate_order(order: Document, catalog: Catalog) -> list[str]:
    """Why ``order`` cannot be fulfilled (empty: it can). Each reason names the attribute at fault."""
    problems = [
        problem for item in order.get("productOrderItem", ()) for problem in _item_problems(item, catalog)
    ]
    if not _has_customer(order.get("relatedParty") or ()):
        problems.append("relatedParty: no party with role customer")
    if not _has_billing_account(order):
        problems.append("billingAccount: none on the order nor on every item")
    return problems


def _item_problems(item: Document, catalog: Catalog) -> list[str]:
    where = f"productOrderItem {item.get('id')!r}"
    offering_id = str((item.get("productOffering") or {}).get("id") or "")
    if not offering_id:
        return [f"{where}: productOffering.id is missing"]
    offering = catalog.offerings.get(offering_id)
    if offering is None:
        return [f"{where}: productOffering {offering_id!r} is not in the catalog"]
    if item.get("action") == "add" and not _sellable(offering):
        status = offering.get("lifecycleStatus")
        return [f"{where}: productOffering {offering_id!r} is not sellable (lifecycleStatus {status!r})"]
    try:
        decompose(item, catalog)
    except PermanentError as error:
        return [f"{where}: {error}"]
    return []


def _sellable(offering: Document) -> bool:
    return offering.get("lifecycleStatus") in SELLABLE and offering.get("isSellable") is not False


def _has_customer(parties: Sequence[Any]) -> bool:
    return any(
        isinstance(party, Mapping) and str(party.get("role", "")).lower() == "customer" and party.get("id")
        for party in parties
    )


def _has_billing_account(order: Document) -> bool:
    if _account_id(order):
        return True
    items = order.get("productOrderItem") or ()
    return bool(items) and all(_account_id(item) for item in items)


def _account_id(holder: Document) -> bool:
    account = holder.get("billingAccount")
    return isinstance(account, Mapping) and bool(account.get("id"))
