"""Loads the sample telco catalog (fibre, mobile, static IP, a bundle) into the TMF620 tables.

Idempotent: an offering or specification that is already there is left as it
is, so an operator's changes survive a restart. Each document inserted emits
its TMF620 create event like any other write.
"""

from __future__ import annotations

from strowger.components.catalog.api import CATALOG_API
from strowger.components.sample_catalog import sample_documents
from strowger.store.db import Database
from strowger.tmf.resources import RESOURCE_TABLES, EventSink, ResourceService

SEED_ORDER = ("productSpecification", "productOfferingPrice", "category", "productOffering", "catalog")


async def load_sample_catalog(database: Database, sink: EventSink) -> int:
    """Insert the sample documents that are missing; returns how many were inserted."""
    await database.create_tables(RESOURCE_TABLES)
    documents = sample_documents()
    inserted = 0
    resources = {resource.name: resource for resource in CATALOG_API.resources}
    async with database.transaction() as tx:
        for name in SEED_ORDER:  # what a document refers to is inserted before it
            service = ResourceService(CATALOG_API, resources[name], database, sink)
            for document in documents.get(name, ()):
                if await service.collection.get(document["id"]) is None:
                    await service.insert(tx, document, resource_id=document["id"])
                    inserted += 1
    return inserted
