"""TMF688 Event Management v4: topics, publishing events to them, and per-topic listeners.

A TMF688 ``topic`` names a bus topic (its ``name``). ``POST /topic/{topicId}/event``
stores the event and, in the same transaction, hands it to the EventSink for
that bus topic, so a published event reaches the outbox exactly when it is
stored. The message on the bus is the TMF notification as posted
(``eventType``, ``event``...), keyed by the id of the resource inside ``event``.

Publishing to the topics that components own (catalogued domain and command
topics, e.g. ``bss.ordering.events``) would let any API client forge facts and
commands, so creating a TMF688 topic on one of them is refused unless
``may_publish`` says otherwise.

Routes (base ``/tmf-api/event/v4``): ``topic`` list/create/retrieve/delete;
``topic/{topicId}/event`` list/create and ``.../event/{id}`` retrieve;
``topic/{topicId}/hub`` list/create and ``.../hub/{id}`` retrieve/delete; plus
the API-wide ``/hub`` and ``/openapi.json`` of every TMF API. Topic management
emits ``TopicCreateEvent`` and ``TopicDeleteEvent`` on ``ops.system.events``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from typing import Any

from fastapi import APIRouter, Request, Response

from strowger.errors import MalformedMessage
from strowger.events.envelope import Category, Envelope, format_time
from strowger.events.topics import ALL_TOPICS, SYSTEM_EVENTS
from strowger.store.db import Database
from strowger.tmf.errors import BadRequest, JsonResponse, ResourceNotFound
from strowger.tmf.hubs import CallbackGuard, HubStore, subscription_from_body, subscription_not_found
from strowger.tmf.openapi import hub_docs, operation_docs
from strowger.tmf.query import Page, ResourceQuery, parse_fields, parse_query, select_fields
from strowger.tmf.resources import (
    Document,
    EventKind,
    EventSink,
    Operation,
    ResourceService,
    ResourceType,
    TmfApi,
    Validator,
    load_definitions,
    openapi_schemas,
    spec_validator,
)
from strowger.tmf.router import read_json, tmf_router

BASE_PATH = "/tmf-api/event/v4"
_SCHEMA_FILE = "tmf688-v4.0.0-schemas.json"
# Names every bus backend accepts (Kafka's rule is the strictest).
_BUS_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_OWNED_CATEGORIES = frozenset({Category.DOMAIN, Category.COMMAND})
_OWNED_TOPICS = frozenset(topic.name for topic in ALL_TOPICS if topic.category in _OWNED_CATEGORIES)

TopicPolicy = Callable[[str], bool]


def not_owned_by_a_component(name: str) -> bool:
    """The default policy: any bus topic but the catalogued domain and command topics."""
    return name not in _OWNED_TOPICS


@cache
def definitions() -> Mapping[str, Any]:
    """The TMF688 JSON Schema definitions (Swagger 2 form)."""
    return load_definitions(__package__ or "strowger.components.events_api", _SCHEMA_FILE)


def _topic_validator(may_publish: TopicPolicy) -> Validator:
    spec = spec_validator(definitions(), "Topic")

    def validate(document: Mapping[str, Any]) -> None:
        spec(document)
        name = document.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(
                "name is required: it names the bus topic", field="name", code="missingBodyField"
            )
        if not _BUS_TOPIC_NAME.match(name):
            raise BadRequest(
                f"name: {name!r} is not a bus topic name (letters, digits, '.', '_', '-')",
                field="name",
                code="invalidBodyField",
            )
        if not may_publish(name):
            raise BadRequest(
                f"name: {name!r} belongs to a component; events cannot be published to it here",
                field="name",
                code="forbiddenTopic",
            )

    return validate


def _event_validator() -> Validator:
    spec = spec_validator(definitions(), "Event")

    def validate(document: Mapping[str, Any]) -> None:
        spec(document)
        if not isinstance(document.get("eventType"), str) or not document["eventType"]:
            raise BadRequest("eventType is required", field="eventType", code="missingBodyField")
        if not isinstance(document.get("event"), Mapping):
            raise BadRequest(
                "event is required and must be an object", field="event", code="missingBodyField"
            )

    return validate


# Stored per topic; published through the sink by hand (the bus carries the event itself).
EVENT = ResourceType(
    name="event",
    type_name="Event",
    validate=_event_validator(),
    last_update=None,
    events=frozenset(),
    schema_name="Event",
    operations=frozenset({Operation.LIST, Operation.RETRIEVE, Operation.CREATE}),
)


def event_api(may_publish: TopicPolicy = not_owned_by_a_component) -> TmfApi:
    """The TMF688 declaration (its ``topic`` resource validated with ``may_publish``)."""
    topic = ResourceType(
        name="topic",
        type_name="Topic",
        validate=_topic_validator(may_publish),
        last_update=None,
        events=frozenset({EventKind.CREATE, EventKind.DELETE}),
        schema_name="Topic",
        operations=frozenset({Operation.LIST, Operation.RETRIEVE, Operation.CREATE, Operation.DELETE}),
    )
    return TmfApi(
        name="event",
        base_path=BASE_PATH,
        title="TMF688 Event Management",
        version="4.0.0",
        resources=(topic,),
        topic=SYSTEM_EVENTS.name,
        producer="event-api",
        schemas=openapi_schemas(definitions()),
    )


class TopicEvents:
    """The events and listeners of TMF688 topics, on the database port and the EventSink."""

    def __init__(self, api: TmfApi, database: Database, sink: EventSink) -> None:
        self.api = api
        self.database = database
        self.sink = sink
        self.topics = ResourceService(api, api.resources[0], database, sink)
        self._hubs: dict[str, HubStore] = {}

    def events(self, topic_id: str) -> ResourceService:
        # One collection per topic, hrefs under the topic.
        scoped = replace(
            self.api, name=f"{self.api.name}/topic/{topic_id}", base_path=self._topic_path(topic_id)
        )
        return ResourceService(scoped, EVENT, self.database, self.sink)

    def _topic_path(self, topic_id: str) -> str:
        return f"{self.api.base_path}/topic/{topic_id}"

    def hubs(self, topic_id: str) -> HubStore:
        """The listeners of one topic (kept: a store creates its tables once)."""
        if topic_id not in self._hubs:
            self._hubs[topic_id] = HubStore(self.database, f"{self.api.name}/topic/{topic_id}")
        return self._hubs[topic_id]

    async def topic(self, topic_id: str) -> Document:
        """The topic, or 404."""
        return await self.topics.get(topic_id)

    async def publish(self, topic_id: str, body: Mapping[str, Any]) -> Document:
        """Store the event and give it to the sink for the topic's bus topic, in one transaction."""
        topic = await self.topic(topic_id)
        events = self.events(topic_id)
        published = {key: value for key, value in body.items() if key not in ("id", "href")}
        try:
            envelope = Envelope.from_tmf(published, producer=self.api.producer)
        except MalformedMessage as exc:
            raise BadRequest(str(exc), code="invalidBody") from None
        # The stored event carries the identifiers the bus message has.
        stored_body = {**body, "eventId": envelope.event_id, "eventTime": format_time(envelope.event_time)}
        async with self.database.transaction() as tx:
            document = await events.insert(tx, stored_body)
            await self.sink.emit(tx, envelope, str(topic["name"]))
        return document

    async def list_events(self, topic_id: str, query: ResourceQuery) -> Page:
        await self.topic(topic_id)
        return await self.events(topic_id).collection.select(query)

    async def get_event(self, topic_id: str, event_id: str) -> Document:
        await self.topic(topic_id)
        document = await self.events(topic_id).collection.get(event_id)
        if document is None:
            raise ResourceNotFound(f"no event with id {event_id!r} in topic {topic_id!r}")
        return document


def event_router(
    database: Database,
    event_sink: EventSink,
    guard: CallbackGuard | None = None,
    *,
    may_publish: TopicPolicy = not_owned_by_a_component,
) -> APIRouter:
    """TMF688 under ``/tmf-api/event/v4``; ``may_publish`` decides which bus topics a topic may name."""
    api = event_api(may_publish)
    guard = guard or CallbackGuard()
    router = tmf_router(api, database, event_sink, guard)
    topics = TopicEvents(api, database, event_sink)
    _add_event_routes(router, topics)
    _add_topic_hub_routes(router, topics, guard)
    return router


def _add_event_routes(router: APIRouter, topics: TopicEvents) -> None:
    docs = operation_docs(EVENT)
    path = "/topic/{topicId}/event"
    limit = topics.api.max_body_bytes

    @router.get(path, tags=["Event"], summary="List or find Event objects", openapi_extra=docs["list"])
    async def list_events(topicId: str, request: Request) -> Response:
        page = await topics.list_events(topicId, parse_query(request.query_params.multi_items()))
        headers = {"X-Total-Count": str(page.total), "X-Result-Count": str(len(page.items))}
        return JsonResponse(page.items, headers=headers)

    @router.post(path, tags=["Event"], summary="Publish an Event to the topic", openapi_extra=docs["create"])
    async def create_event(topicId: str, request: Request) -> Response:
        body, _ = await read_json(request, limit)
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object", code="invalidBody")
        refused = sorted({"id", "href"} & set(body))
        if refused:
            raise BadRequest(f"{refused[0]} is set by the server", field=refused[0], code="readOnlyField")
        document = await topics.publish(topicId, body)
        return JsonResponse(document, status_code=201, headers={"Location": str(document["href"])})

    @router.get(
        f"{path}/{{id}}", tags=["Event"], summary="Retrieve an Event by id", openapi_extra=docs["get"]
    )
    async def get_event(topicId: str, id: str, request: Request) -> Response:
        document = await topics.get_event(topicId, id)
        fields = request.query_params.get("fields")
        return JsonResponse(select_fields(document, parse_fields(fields) if fields is not None else None))


def _add_topic_hub_routes(router: APIRouter, topics: TopicEvents, guard: CallbackGuard) -> None:
    path = "/topic/{topicId}/hub"
    tag = "topic events subscription"

    @router.get(path, tags=[tag], summary="List the listeners of a topic")
    async def list_listeners(topicId: str) -> Response:
        await topics.topic(topicId)
        listeners = [subscription.to_tmf() for subscription in await topics.hubs(topicId).all()]
        count = str(len(listeners))
        return JsonResponse(listeners, headers={"X-Total-Count": count, "X-Result-Count": count})

    @router.post(path, tags=[tag], summary="Register a listener on a topic", openapi_extra=hub_docs())
    async def register_listener(topicId: str, request: Request) -> Response:
        await topics.topic(topicId)
        body, _ = await read_json(request, topics.api.max_body_bytes)
        callback, query, secret = await subscription_from_body(body, guard)
        subscription = await topics.hubs(topicId).add(callback, query, secret)
        location = f"{topics.api.base_path}/topic/{topicId}/hub/{subscription.id}"
        return JsonResponse(subscription.to_tmf(), status_code=201, headers={"Location": location})

    @router.get(f"{path}/{{id}}", tags=[tag], summary="Retrieve a listener of a topic")
    async def get_listener(topicId: str, id: str) -> Response:
        await topics.topic(topicId)
        subscription = await topics.hubs(topicId).get(id)
        if subscription is None:
            raise subscription_not_found(id)
        return JsonResponse(subscription.to_tmf())

    @router.delete(f"{path}/{{id}}", tags=[tag], summary="Unregister a listener of a topic", status_code=204)
    async def unregister_listener(topicId: str, id: str) -> Response:
        await topics.topic(topicId)
        if not await topics.hubs(topicId).remove(id):
            raise subscription_not_found(id)
        return Response(status_code=204)
