"""An AsyncAPI 2.6 document of Strowger's topics, the events on each and their schemas.

Event schemas are self-contained (their own ``definitions``); inside one AsyncAPI
document a ``#/definitions/X`` reference would point at the document root, so
each schema's definitions are hoisted into ``components/schemas`` under
``<API>.<Name>`` (the same TMF definition differs between APIs) and the
references rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from strowger import __version__
from strowger.events.envelope import Category, Header
from strowger.events.topics import (
    BILLING_EVENTS,
    CATALOG_EVENTS,
    ORDERING_EVENTS,
    RESOURCE_EVENTS,
    SERVICE_EVENTS,
    Topic,
)

ASYNCAPI_VERSION = "2.6.0"
SCHEMA_FORMAT = "application/schema+json;version=draft-07"

# Where each TMF API's events travel unless a route says otherwise.
API_TOPICS: Mapping[str, str] = {
    "TMF620": CATALOG_EVENTS.name,
    "TMF633": CATALOG_EVENTS.name,
    "TMF634": CATALOG_EVENTS.name,
    "TMF622": ORDERING_EVENTS.name,
    "TMF637": ORDERING_EVENTS.name,
    "TMF629": ORDERING_EVENTS.name,
    "TMF632": ORDERING_EVENTS.name,
    "TMF666": BILLING_EVENTS.name,
    "TMF678": BILLING_EVENTS.name,
    "TMF641": SERVICE_EVENTS.name,
    "TMF638": SERVICE_EVENTS.name,
    "TMF652": RESOURCE_EVENTS.name,
    "TMF639": RESOURCE_EVENTS.name,
}

_HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Transport headers carried by every message (strowger.events.envelope.Header).",
    "properties": {header.value: {"type": "string"} for header in Header},
    "required": [Header.EVENT_ID.value, Header.EVENT_TYPE.value, Header.SCHEMA_VERSION.value],
}


def asyncapi_document(
    topics: Sequence[Topic],
    schemas: Mapping[tuple[str, int], Mapping[str, Any]],
    routes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI document: one channel per topic, one message per (event type, version).

    ``routes`` maps an event type to its topic name; otherwise the schema's
    ``x-tmf-api`` picks the topic from :data:`API_TOPICS`. Messages without a
    known topic still appear under ``components/messages``.
    """
    routes = routes or {}
    messages: dict[str, Any] = {}
    component_schemas: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {topic.name: [] for topic in topics}
    for (event_type, version), schema in sorted(schemas.items()):
        key = f"{event_type}.v{version}"
        prefix = str(schema.get("x-tmf-api") or key)
        messages[key] = _message(event_type, version, _hoist(schema, prefix, component_schemas))
        topic_name = routes.get(event_type) or API_TOPICS.get(str(schema.get("x-tmf-api")), "")
        if topic_name in by_topic:
            by_topic[topic_name].append(key)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Strowger events",
            "version": __version__,
            "description": "Topics of the Strowger BSS/OSS backbone and the TMF notifications on each.",
        },
        "defaultContentType": "application/json",
        "channels": {topic.name: _channel(topic, by_topic[topic.name]) for topic in topics},
        "components": {"messages": messages, "schemas": component_schemas},
    }


def _channel(topic: Topic, message_keys: list[str]) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "description": f"{topic.category.value} topic ({'replayable' if topic.replayable else 'queue'})",
        "bindings": {"kafka": {"partitions": topic.partitions, "bindingVersion": "0.4.0"}},
    }
    if message_keys:
        # AsyncAPI 2 speaks from the application's side: it sends events (others subscribe)
        # and receives commands (others publish).
        operation = "publish" if topic.category is Category.COMMAND else "subscribe"
        refs = [{"$ref": f"#/components/messages/{key}"} for key in message_keys]
        channel[operation] = {
            "operationId": f"{operation}_{topic.name.replace('.', '_')}",
            "message": {"oneOf": refs} if len(refs) > 1 else refs[0],
        }
    return channel


def _message(event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": event_type,
        "title": f"{event_type} (schema version {version})",
        "contentType": "application/json",
        "schemaFormat": SCHEMA_FORMAT,
        "headers": _HEADERS_SCHEMA,
        "correlationId": {"location": f"$message.header#/{Header.CORRELATION_ID.value}"},
        "payload": payload,
    }


def _hoist(schema: Mapping[str, Any], prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its definitions, which move to ``into`` under ``prefix.Name``."""
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    for name, definition in definitions.items():
        into.setdefault(f"{prefix}.{name}", _rewrite(definition, prefix))
    payload = {k: v for k, v in schema.items() if k not in ("definitions", "$defs", "$id", "$schema")}
    rewritten: dict[str, Any] = _rewrite(payload, prefix)
    return rewritten


def _rewrite(node: Any, prefix: str) -> Any:
    if isinstance(node, Mapping):
        rewritten = {key: _rewrite(value, prefix) for key, value in node.items()}
        ref = rewritten.get("$ref")
        if isinstance(ref, str):
            for holder in ("#/definitions/", "#/$defs/"):
                if ref.startswith(holder):
                    rewritten["$ref"] = f"#/components/schemas/{prefix}.{ref.removeprefix(holder)}"
        return rewritten
    if isinstance(node, list):
        return [_rewrite(value, prefix) for value in node]
    return node
