"""Generated event schemas: TMF sample payloads in a notification pass, wrong ones fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator

from strowger.events.asyncapi import asyncapi_document
from strowger.events.envelope import Envelope
from strowger.events.schemas import EventSchema, builtin_catalog, builtin_schemas, tmf_spec_dir
from strowger.events.topics import ALL_TOPICS

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "tmf-samples-v4"
REQUIRED_APIS = {"TMF620", "TMF622", "TMF637", "TMF638", "TMF639", "TMF641", "TMF652", "TMF678"}

# Samples the TMF repositories publish with defects against their own Swagger: the schema
# must reject them, at exactly these places (proof the resource schema is really applied).
SAMPLE_DEFECTS = {
    "TMF633_Service_Catalog__ServiceSpecification.example.json": "valueFrom",
    "TMF637_Product_Inventory__Product.example.json": None,  # a list of products: first is clean
    "TMF638_Service_Inventory__Service.example.json": "featureCharacteristic",
    "TMF639_Resource_Inventory__Resource.example.json": "'role' is a required property",
    "TMF639_Resource_Inventory__Resource.value.json": "'unlock' is not one of",
    "TMF641_Service_Ordering__ServiceOrder.example.json": "'@type' is a required property",
    "TMF652_Resource_Order__CancelResourceOrder.example.json": "'assessingCancellation'",
    "TMF666_Account__BillingAccount.example.json": "'@referredType' is a required property",
    "TMF678_Customer_Bill__CustomerBill.example.json": "'@referredType' is a required property",
    "TMF678_Customer_Bill__CustomerBillOnDemand.example.json": "'id' is a required property",
}


def catalog() -> tuple[EventSchema, ...]:
    return builtin_catalog()


def notification(item: EventSchema, resource: Any) -> dict[str, Any]:
    envelope = Envelope(event_type=item.event_type, payload={item.resource_field: resource}, entity_key="1")
    return envelope.to_tmf()


def sample_cases() -> list[tuple[str, EventSchema]]:
    cases = []
    for path in sorted(SAMPLES.glob("*.json")):
        api, _, rest = path.name.partition("_")
        resource = rest.split("__")[1].split(".")[0]
        for item in catalog():
            if item.api == api and item.resource == resource and item.event_type.endswith("CreateEvent"):
                cases.append((path.name, item))
                break
    return cases


def load_sample(name: str) -> Any:
    sample = orjson.loads((SAMPLES / name).read_bytes())
    return sample[0] if isinstance(sample, list) else sample


def test_the_required_apis_have_schemas_and_every_schema_is_valid_draft_07() -> None:
    assert {item.api for item in catalog()} >= REQUIRED_APIS
    schemas = builtin_schemas()
    assert ("ProductOrderStateChangeEvent", 1) in schemas
    assert ("CustomerBillStateChangeEvent", 1) in schemas
    for schema in schemas.values():
        Draft7Validator.check_schema(schema)


def test_state_change_schema_takes_the_resource_from_tmf622() -> None:
    schema = builtin_schemas()[("ProductOrderStateChangeEvent", 1)]
    order = schema["properties"]["event"]["properties"]["productOrder"]
    assert "productOrderItem" in order["properties"]
    assert order["required"] == ["id"]  # events may carry a partial resource
    states = schema["definitions"]["ProductOrderStateType"]["enum"]
    assert {"acknowledged", "inProgress", "completed", "failed"} <= set(states)
    assert schema["additionalProperties"] is True  # TMF open content model


@pytest.mark.parametrize(("name", "item"), sample_cases(), ids=[case[0] for case in sample_cases()])
def test_tmf_samples_in_a_notification(name: str, item: EventSchema) -> None:
    errors = list(Draft7Validator(item.schema).iter_errors(notification(item, load_sample(name))))
    defect = SAMPLE_DEFECTS.get(name)
    if defect is None:
        assert errors == [], [error.message for error in errors]
    else:
        assert any(defect in f"{error.json_path} {error.message}" for error in errors)


def test_obviously_wrong_notifications_are_rejected() -> None:
    item = next(i for i in catalog() if i.event_type == "ProductOrderStateChangeEvent")
    validator = Draft7Validator(item.schema)
    good = notification(item, {"id": "42", "state": "completed"})
    assert validator.is_valid(good)
    wrong: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "eventId"},
        {**good, "eventType": "ProductOrderCreateEvent"},
        {**good, "event": {}},
        {**good, "event": {"productOrder": {"state": "completed"}}},  # no id
        {**good, "event": {"productOrder": {"id": "42", "state": "done"}}},
        {**good, "event": {"productOrder": {"id": 42}}},
        {**good, "event": {"productOrder": {"id": "42", "productOrderItem": [{"id": "1"}]}}},  # no action
        {**good, "correlationId": 7},
    ]
    for body in wrong:
        assert not validator.is_valid(body), body


def test_open_content_accepts_unknown_members() -> None:
    item = next(i for i in catalog() if i.event_type == "ServiceOrderStateChangeEvent")
    body = notification(item, {"id": "s1", "x-operatorExtension": {"a": 1}})
    body["x-traceTag"] = "abc"
    assert Draft7Validator(item.schema).is_valid(body)


def test_asyncapi_document_places_events_on_topics_with_resolvable_refs() -> None:
    document = asyncapi_document(ALL_TOPICS, builtin_schemas())
    assert document["asyncapi"] == "2.6.0"
    assert set(document["channels"]) == {topic.name for topic in ALL_TOPICS}
    billing = document["channels"]["bss.billing.events"]["subscribe"]["message"]["oneOf"]
    assert {"$ref": "#/components/messages/CustomerBillStateChangeEvent.v1"} in billing
    text = orjson.dumps(document).decode()
    assert "#/definitions/" not in text
    schemas = document["components"]["schemas"]
    for ref in set(_refs(document)):
        kind, name = ref.removeprefix("#/components/").split("/", 1)
        assert name in document["components"][kind], ref
    assert "TMF622.ProductOrderItem" in schemas


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_spec_directory_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from strowger.errors import ConfigError

    monkeypatch.setenv("STROWGER_TMF_SPECS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="STROWGER_TMF_SPECS_DIR"):
        tmf_spec_dir()
