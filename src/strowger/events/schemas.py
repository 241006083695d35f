"""JSON Schemas for every built-in event type: the TMF notification envelope plus one resource.

The envelope comes from the pydantic model :class:`TmfNotification` (TMF's open
content model: unknown members allowed). The resource inside ``event`` comes from
the TMF v4 Swagger 2.0 definitions, converted to JSON Schema draft-07 with every
``$ref`` kept under ``definitions`` so each schema is self-contained (recursive
TMF structures such as ``ProductOrderItem`` cannot be inlined). Draft-07 is the
dialect AsyncAPI 2.6 and the common schema registries accept everywhere.

Two deliberate deviations from the Swagger text, both explained in
docs/schema-registry.md: the resource inside an event requires only ``id`` (TMF
hubs may project fields, state-change events carry partial resources), and
TMF678 v4.0.0 publishes no event definitions, so its four notifications are
assembled from the resource definitions under the names the TMF678 guide uses.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from strowger.errors import ConfigError

DIALECT = "http://json-schema.org/draft-07/schema#"
SPECS_ENV = "STROWGER_TMF_SPECS_DIR"
BUILTIN_VERSION = 1

Schema = dict[str, Any]


class TmfNotification(BaseModel):
    """The TMF notification structure (v4 and v5) every Strowger event travels in."""

    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, populate_by_name=True, title="TmfNotification"
    )

    event_id: str = Field(description="The identifier of the notification.")
    event_time: datetime = Field(description="Time of the event occurrence.")
    event_type: str = Field(description="The type of the notification.")
    correlation_id: str | SkipJsonSchema[None] = Field(None, description="The correlation id for this event.")
    domain: str | SkipJsonSchema[None] = Field(None, description="The domain of the event.")
    title: str | SkipJsonSchema[None] = Field(None, description="The title of the event.")
    description: str | SkipJsonSchema[None] = Field(None, description="An explanation of the event.")
    priority: str | SkipJsonSchema[None] = Field(None, description="A priority.")
    time_occurred: datetime | SkipJsonSchema[None] = Field(None, description="The time the event occurred.")
    time_ocurred: datetime | SkipJsonSchema[None] = Field(
        None, description="Misspelling of timeOccurred found in several TMF v4 specifications; accepted."
    )
    source: dict[str, Any] | SkipJsonSchema[None] = Field(
        None, description="The entity that produced the event (EntityRef)."
    )
    reporting_system: dict[str, Any] | SkipJsonSchema[None] = Field(
        None, description="The system that reported the event (EntityRef)."
    )
    event: dict[str, Any] = Field(description="The event payload: the one resource involved.")
    type_: str | SkipJsonSchema[None] = Field(None, alias="@type", description="The notification class.")
    base_type: str | SkipJsonSchema[None] = Field(None, alias="@baseType", description="Its super-class.")
    schema_location: str | SkipJsonSchema[None] = Field(
        None, alias="@schemaLocation", description="A URI to a JSON Schema of the notification."
    )


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One event type's schema and where it comes from."""

    event_type: str
    version: int
    api: str  # "TMF622"
    resource_field: str  # "productOrder": the member of ``event`` holding the resource
    resource: str  # "ProductOrder": the TMF resource definition
    schema: Mapping[str, Any]


# The API specs read, newest version of each (specs-v4 file names).
SPEC_FILES: tuple[tuple[str, str], ...] = (
    ("TMF620", "TMF620-ProductCatalog-v4.1.0.swagger.json"),
    ("TMF622", "TMF622-ProductOrdering-v4.0.0.swagger.json"),
    ("TMF629", "TMF629-Customer-v4.0.0.swagger.json"),
    ("TMF632", "TMF632-Party-v4.0.0.swagger.json"),
    ("TMF633", "TMF633-ServiceCatalog-v4.0.0.swagger.json"),
    ("TMF634", "TMF634-ResourceCatalog-v4.1.0.swagger.json"),
    ("TMF637", "TMF637-ProductInventory-v4.0.0.swagger.json"),
    ("TMF638", "TMF638-ServiceInventory-v4.0.0.swagger.json"),
    ("TMF639", "TMF639-ResourceInventory-v4.0.0.swagger.json"),
    ("TMF641", "TMF641-ServiceOrdering-v4.1.0.swagger.json"),
    ("TMF652", "TMF652-ResourceOrder-v4.0.0.swagger.json"),
    ("TMF666", "TMF666-Account-v4.1.0.swagger.json"),
    ("TMF678", "TMF678-Customer_Bill-v4.0.0.swagger.json"),
)

# TMF678 v4.0.0's Swagger defines no events; these are the notifications its guide names.
SYNTHESIZED_EVENTS: dict[str, dict[str, tuple[str, str]]] = {
    "TMF678": {
        "CustomerBillCreateEvent": ("customerBill", "CustomerBill"),
        "CustomerBillStateChangeEvent": ("customerBill", "CustomerBill"),
        "CustomerBillOnDemandCreateEvent": ("customerBillOnDemand", "CustomerBillOnDemand"),
        "CustomerBillOnDemandStateChangeEvent": ("customerBillOnDemand", "CustomerBillOnDemand"),
    }
}


def builtin_schemas(spec_dir: Path | None = None) -> dict[tuple[str, int], Mapping[str, Any]]:
    """The JSON Schema of every built-in event type, keyed by (event type, version).

    The schemas are shared and cached: treat them as read-only.
    """
    return {(item.event_type, item.version): item.schema for item in builtin_catalog(spec_dir)}


def builtin_catalog(spec_dir: Path | None = None) -> tuple[EventSchema, ...]:
    """Every built-in event schema with its API and resource field (for AsyncAPI and docs)."""
    return _catalog(spec_dir or tmf_spec_dir())


def tmf_spec_dir() -> Path:
    """Where the TMF v4 Swagger files are: $STROWGER_TMF_SPECS_DIR, else the copy shipped in the package."""
    configured = os.environ.get(SPECS_ENV)
    candidates = [Path(configured)] if configured else _default_spec_dirs()
    for candidate in candidates:
        if (candidate / SPEC_FILES[1][1]).is_file():
            return candidate
    raise ConfigError(SPECS_ENV, "a directory holding the TMF v4 *.swagger.json files", configured)


def _default_spec_dirs() -> list[Path]:
    return [Path(__file__).resolve().parents[1] / "tmf" / "specs" / "v4"]


def notification_schema() -> Schema:
    """The envelope's JSON Schema (draft-07), generated from :class:`TmfNotification`."""
    generated = TmfNotification.model_json_schema(by_alias=True, ref_template="#/definitions/{model}")
    for prop in generated["properties"].values():
        prop.pop("title", None)
        if prop.get("default", "missing") is None:
            del prop["default"]
    generated["properties"]["timeOcurred"]["deprecated"] = True
    return generated


@functools.cache
def _catalog(spec_dir: Path) -> tuple[EventSchema, ...]:
    envelope = notification_schema()
    seen: dict[str, EventSchema] = {}
    for api, file_name in SPEC_FILES:
        definitions = _load_definitions(spec_dir / file_name)
        for event_type, field, resource in _events(api, definitions):
            if event_type not in seen:  # the first API listed owns a name two specs share
                schema = event_schema(event_type, api, field, resource, definitions, envelope)
                seen[event_type] = EventSchema(event_type, BUILTIN_VERSION, api, field, resource, schema)
    return tuple(seen.values())


def _load_definitions(path: Path) -> dict[str, Any]:
    try:
        spec = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(SPECS_ENV, f"a readable TMF Swagger file at {path}", str(exc)) from exc
    return {name: _convert(node) for name, node in spec.get("definitions", {}).items()}


def _events(api: str, definitions: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(event type, resource field, resource definition) for each event the API defines."""
    if api in SYNTHESIZED_EVENTS:
        for event_type, (field, resource) in SYNTHESIZED_EVENTS[api].items():
            if resource in definitions:
                yield event_type, field, resource
        return
    for name in definitions:
        payload = definitions.get(f"{name}Payload")
        if not name.endswith("Event") or not isinstance(payload, Mapping):
            continue
        for field, prop in payload.get("properties", {}).items():
            ref = prop.get("$ref", "")
            if ref.startswith("#/definitions/"):
                yield name, field, ref.removeprefix("#/definitions/")
                break


def event_schema(
    event_type: str,
    api: str,
    field: str,
    resource: str,
    definitions: Mapping[str, Any],
    envelope: Schema | None = None,
) -> Schema:
    """The self-contained schema of one event type: envelope + ``event.<field>`` = ``resource``."""
    envelope = envelope if envelope is not None else notification_schema()
    properties = dict(envelope["properties"])
    properties["eventType"] = {**properties["eventType"], "const": event_type}
    properties["event"] = {
        "type": "object",
        "description": f"The event payload: the {resource} involved.",
        "properties": {field: _event_resource(resource, definitions[resource])},
        "required": [field],
    }
    used = _closure(properties["event"], definitions)
    return {
        "$schema": DIALECT,
        "$id": f"urn:strowger:schema:{event_type}:{BUILTIN_VERSION}",
        "title": event_type,
        "description": f"{api} notification {event_type} in the TMF notification envelope.",
        "type": "object",
        "properties": properties,
        "required": envelope["required"],
        "additionalProperties": True,
        "x-tmf-api": api,
        "definitions": {name: definitions[name] for name in sorted(used)},
    }


def _event_resource(resource: str, definition: Mapping[str, Any]) -> Schema:
    """The resource as events carry it: possibly partial, so only ``id`` is required."""
    relaxed = {key: value for key, value in definition.items() if key != "required"}
    if "id" in definition.get("properties", {}):
        relaxed["required"] = ["id"]
    return relaxed


def _closure(node: Any, definitions: Mapping[str, Any]) -> set[str]:
    """The names of every definition ``node`` reaches through ``$ref``."""
    found: set[str] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, Mapping):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                name = ref.removeprefix("#/definitions/")
                if name not in found:
                    if name not in definitions:
                        raise ConfigError(SPECS_ENV, f"a definition named {name!r}", ref)
                    found.add(name)
                    pending.append(definitions[name])
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return found


_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("properties", "definitions", "patternProperties")
_SWAGGER_ONLY = ("discriminator", "xml", "externalDocs", "x-nullable")


def _convert(node: Any) -> Any:
    """A Swagger 2.0 schema object as JSON Schema draft-07 (``example`` → ``examples``, nullable...)."""
    if not isinstance(node, Mapping):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SWAGGER_ONLY:
            continue
        if key == "example":
            converted["examples"] = [value]
        elif key in _SUBSCHEMA_MAPS:
            converted[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS:
            converted[key] = [_convert(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            converted[key] = _convert(value)
        else:
            converted[key] = value
    if "$ref" in converted:  # draft-07 ignores a $ref's siblings: keep the reference alone
        return {"$ref": converted["$ref"]}
    if node.get("x-nullable") and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted
