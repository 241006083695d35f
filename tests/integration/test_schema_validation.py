"""Schema validation on consume and on produce (issue 7), with the TMF schemas from the registry."""

from __future__ import annotations

import pytest

from strowger.bus.embedded import EmbeddedBus
from strowger.bus.observe import MetricsObserver
from strowger.bus.runtime import Consumer, ConsumerRunner, UnitOfWork, encode_emitted
from strowger.errors import SchemaViolation
from strowger.events.envelope import Envelope, decode
from strowger.events.registry import SchemaRegistry
from strowger.events.schemas import builtin_schemas
from strowger.events.validation import SchemaValidator
from strowger.ops.metrics import Metrics
from strowger.ops.sampler import PlatformSampler
from strowger.store.db import Database
from tests.conftest import unique
from tests.integration.test_pipeline_metrics import bus, deliver, new_topic  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

CREATED = "ProductOrderCreateEvent"


def order_created(order: dict[str, object], key: str = "PO-1") -> Envelope:
    return Envelope(event_type=CREATED, payload={"productOrder": order}, entity_key=key)


@pytest.fixture(scope="module")
def validator() -> SchemaValidator:
    return SchemaValidator.from_schemas(builtin_schemas())


async def dead_letters(database: Database, consumer: str) -> list[tuple[str, str, str]]:
    rows = await database.fetchall(
        "SELECT entity_key, error_type, error_message FROM parked WHERE consumer = ? AND status = 'dead'",
        (consumer,),
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


async def test_the_validator_loads_every_registered_version(sqlite_db: Database) -> None:
    registry = SchemaRegistry(sqlite_db)
    await registry.create_tables()
    schemas = builtin_schemas()
    await registry.register_all({key: schemas[key] for key in list(schemas)[:5]})
    validator = SchemaValidator()
    assert await validator.load(registry) == 5
    assert all(validator.knows(event_type) for event_type, _ in list(schemas)[:5])


async def test_an_invalid_event_on_the_bus_goes_to_the_validation_dead_letters(
    bus: EmbeddedBus,  # noqa: F811
    sqlite_db: Database,
    validator: SchemaValidator,
) -> None:
    applied: list[str] = []

    async def apply(envelope: Envelope, uow: UnitOfWork) -> None:
        applied.append(envelope.entity_key)

    metrics = Metrics()
    topic = await new_topic(bus)
    consumer = Consumer(name=unique("billing"), topics=(topic,), handler=apply)
    runner = ConsumerRunner(consumer, bus, sqlite_db, observer=MetricsObserver(metrics), validator=validator)
    invalid = order_created({"state": "acknowledged"}, key="PO-BAD")  # a productOrder without its id
    later = order_created({"id": "PO-BAD", "state": "inProgress"}, key="PO-BAD")
    valid = order_created({"id": "PO-1", "state": "acknowledged"})
    await deliver(bus, runner, [invalid, valid, later], topic)

    assert applied == ["PO-1"]  # the handler never saw the invalid event, nor what follows it
    [(key, error_type, reason)] = await dead_letters(sqlite_db, runner.name)
    assert (key, error_type) == ("PO-BAD", "SchemaViolation")
    assert "ProductOrderCreateEvent version 1" in reason and "'id' is a required property" in reason
    blocked = await sqlite_db.fetchall(
        "SELECT event_id FROM parked WHERE consumer = ? AND status = 'blocked'", (runner.name,)
    )
    assert [row[0] for row in blocked] == [later.event_id]  # waits behind it, in sequence
    labels = {"consumer": runner.name, "event_type": CREATED}
    assert metrics.registry.get_sample_value("strowger_schema_violations_total", labels) == 1
    inputs = await PlatformSampler(sqlite_db, bus, Metrics(), []).sample()
    assert inputs.schema_violations == {runner.name: 1}


async def test_types_without_a_schema_pass_unless_strict(
    bus: EmbeddedBus,  # noqa: F811
    sqlite_db: Database,
) -> None:
    applied: list[str] = []

    async def apply(envelope: Envelope, uow: UnitOfWork) -> None:
        applied.append(envelope.event_type)

    topic = await new_topic(bus)
    command = Envelope(event_type="AllocateResources", payload={"command": {"id": "C-1"}}, entity_key="C-1")
    lenient = SchemaValidator.from_schemas(builtin_schemas())
    runner = ConsumerRunner(Consumer(unique("rom"), (topic,), apply), bus, sqlite_db, validator=lenient)
    await deliver(bus, runner, [command], topic)
    assert applied == ["AllocateResources"]
    strict = SchemaValidator.from_schemas(builtin_schemas(), strict=True)
    strict_topic = await new_topic(bus)
    refusing = ConsumerRunner(
        Consumer(unique("rom"), (strict_topic,), apply), bus, sqlite_db, validator=strict
    )
    await deliver(bus, refusing, [command], strict_topic)
    assert applied == ["AllocateResources"]
    [(_, error_type, reason)] = await dead_letters(sqlite_db, refusing.name)
    assert (
        error_type == "SchemaViolation" and "no schema registered for event type AllocateResources" in reason
    )


async def test_a_handler_emitting_an_invalid_event_writes_nothing_and_is_dead_lettered(
    bus: EmbeddedBus,  # noqa: F811
    sqlite_db: Database,
    validator: SchemaValidator,
) -> None:
    async def emit_broken(envelope: Envelope, uow: UnitOfWork) -> None:
        await uow.emit(envelope.caused(CREATED, {"productOrder": {"state": "acknowledged"}}), "bss.x")

    topic = await new_topic(bus)
    runner = ConsumerRunner(
        Consumer(unique("com"), (topic,), emit_broken), bus, sqlite_db, validator=validator
    )
    await deliver(bus, runner, [order_created({"id": "PO-1"})], topic)
    [(_, error_type, _)] = await dead_letters(sqlite_db, runner.name)
    assert error_type == "SchemaViolation"
    assert await sqlite_db.fetchall("SELECT id FROM outbox WHERE topic = 'bss.x'") == []


def test_producers_validate_before_the_outbox(validator: SchemaValidator) -> None:
    message = encode_emitted(
        order_created({"id": "PO-1"}), "bss.ordering.events", producer="com", validator=validator
    )
    good = decode(message)
    assert good.producer == "com" and good.traceparent.startswith("00-")
    with pytest.raises(SchemaViolation):
        encode_emitted(
            order_created({"state": "x"}), "bss.ordering.events", producer="com", validator=validator
        )
