"""TMF620 Product Catalog Management v4, declared on the generic TMF resource toolkit.

Schemas are the TMF620 v4.0.0 definitions (vendored next to this module): a
POST is checked against ``X_Create`` (only ``name`` is required), every stored
version against ``X``. The server sets id, href, @type (if absent), lastUpdate
and the initial lifecycleStatus, and enforces the TMF620 lifecycle on PATCH.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter

from strowger.events.topics import CATALOG_EVENTS
from strowger.store.db import Database
from strowger.tmf.hubs import CallbackGuard
from strowger.tmf.resources import (
    EventKind,
    EventSink,
    Lifecycle,
    ResourceType,
    TmfApi,
    Validator,
    schema_validator,
)
from strowger.tmf.router import tmf_router

BASE_PATH = "/tmf-api/productCatalogManagement/v4"
_SCHEMA_FILE = "tmf620-v4.0.0-schemas.json"

# TMF620 lifecycle (user guide): forward one step at a time; Rejected ends an entity before launch.
PRODUCT_LIFECYCLE = Lifecycle(
    attribute="lifecycleStatus",
    initial="In study",
    transitions={
        "In study": frozenset({"In design", "Rejected"}),
        "In design": frozenset({"In test", "Rejected"}),
        "In test": frozenset({"Active", "Rejected"}),
        "Active": frozenset({"Launched"}),
        "Launched": frozenset({"Retired"}),
        "Retired": frozenset({"Obsolete"}),
        "Obsolete": frozenset(),
        "Rejected": frozenset(),
    },
)

_CREATE_DELETE = frozenset({EventKind.CREATE, EventKind.DELETE})


@cache
def definitions() -> Mapping[str, Any]:
    """The TMF620 JSON Schema definitions (Swagger 2 form, ``#/definitions/...`` references)."""
    text = files(__package__).joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = json.loads(text)["definitions"]
    return loaded


def openapi_schemas() -> dict[str, Any]:
    """The same definitions as OpenAPI 3 ``components.schemas``."""
    text = json.dumps(definitions()).replace("#/definitions/", "#/components/schemas/")
    schemas: dict[str, Any] = json.loads(text)
    return schemas


# What each resource refers to in this catalog: a dangling reference is refused (400 naming
# the attribute), so an order never meets an offering whose specification is not there.
REFERENCES: Mapping[str, Mapping[str, str]] = {
    "catalog": {"category.id": "category"},
    # Not subCategory nor productOffering: they point back at what points at the category
    # (a child's parentId, an offering's category), so one side must be written first.
    "category": {"parentId": "category"},
    "productSpecification": {"productSpecificationRelationship.id": "productSpecification"},
    "productOffering": {
        "productSpecification.id": "productSpecification",
        "category.id": "category",
        "productOfferingPrice.id": "productOfferingPrice",
        "bundledProductOffering.id": "productOffering",
    },
    "productOfferingPrice": {},
}


def _resource(name: str, type_name: str, events: frozenset[EventKind] = frozenset(EventKind)) -> ResourceType:
    return ResourceType(
        name=name,
        type_name=type_name,
        validate=_create_then_stored(type_name),
        lifecycle=PRODUCT_LIFECYCLE,
        events=events,
        schema_name=type_name,
        references=REFERENCES[name],
    )


def _create_then_stored(type_name: str) -> Validator:
    # The stored document is checked against the resource schema; a create additionally
    # needs the X_Create required fields, which the resource schema does not list.
    create = schema_validator(definitions(), f"{type_name}_Create")
    stored = schema_validator(definitions(), type_name)

    def validate(document: Mapping[str, Any]) -> None:
        create({key: value for key, value in document.items() if key not in ("id", "href")})
        stored(document)

    return validate


CATALOG_API = TmfApi(
    name="productCatalogManagement",
    base_path=BASE_PATH,
    title="TMF620 Product Catalog Management",
    version="4.0.0",
    resources=(
        _resource("catalog", "Catalog", _CREATE_DELETE),
        _resource("category", "Category", _CREATE_DELETE),
        _resource("productSpecification", "ProductSpecification", _CREATE_DELETE),
        _resource("productOffering", "ProductOffering"),
        _resource("productOfferingPrice", "ProductOfferingPrice"),
    ),
    topic=CATALOG_EVENTS.name,
    producer="catalog",
    schemas=openapi_schemas(),
)


def catalog_router(
    database: Database, event_sink: EventSink, guard: CallbackGuard | None = None
) -> APIRouter:
    """The TMF620 API (with ``/hub`` and ``/openapi.json``) under ``/tmf-api/productCatalogManagement/v4``.

    ``guard`` checks hub callbacks; the default refuses every non-public address.
    """
    return tmf_router(CATALOG_API, database, event_sink, guard or CallbackGuard())
