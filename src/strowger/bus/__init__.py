"""The event bus: one port, three backends (embedded SQLite log, Kafka, RabbitMQ)."""

from typing import Any

from strowger.bus.port import Bus, Delivery, LagSample, ReplayPoint, Subscriber

__all__ = ["Bus", "Delivery", "LagSample", "ReplayPoint", "Subscriber", "open_bus"]


def open_bus(url: str, **options: Any) -> Bus:
    """The backend for ``url`` (not yet started): ``embedded://``, ``kafka://…`` or ``amqp://…``.

    The embedded backend keeps its log in a database; pass it as ``database=``.
    """
    from strowger.settings import bus_kind

    kind = bus_kind(url)
    if kind == "embedded":
        from strowger.bus.embedded import EmbeddedBus

        return EmbeddedBus(url, **options)
    if kind == "kafka":
        from strowger.bus.kafka import KafkaBus

        return KafkaBus(url, **options)
    from strowger.bus.rabbitmq import RabbitBus

    return RabbitBus(url, **options)
