"""The composition root: the one place that turns settings into running parts.

``bootstrap(settings)`` builds a :class:`Platform`: the database, the bus, the
shared outbox and its relay, and every component the settings ask for, each
contributing its tables, HTTP routers, consumers and background tasks.
Nothing else in the code base constructs adapters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from strowger.bus import Bus, open_bus
from strowger.bus.observe import MetricsObserver
from strowger.bus.pacing import LoopPacer
from strowger.bus.runtime import Consumer, ConsumerRunner, encode_emitted
from strowger.errors import SchemaViolation
from strowger.events.envelope import Envelope
from strowger.events.topics import ALL_TOPICS
from strowger.events.validation import SchemaValidator
from strowger.ops.metrics import Metrics
from strowger.settings import Settings, load_section
from strowger.store.db import Database, TableSet, Transaction, open_database
from strowger.store.outbox import Outbox, OutboxRelay

log = logging.getLogger("strowger.platform")

Task = Callable[[], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
STOP_TIMEOUT = 10.0  # seconds each task gets to finish its current batch on shutdown


class OutboxSink:
    """The EventSink every component emits through: the shared transactional outbox.

    Each event is stamped (producer, trace context) and validated against its registered
    schema before it is written: an invalid event is a bug in its producer and is refused.
    """

    def __init__(
        self,
        outbox: Outbox,
        producer: str,
        *,
        validator: SchemaValidator | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        self.producer = producer
        self.validator = validator
        self.metrics = metrics

    async def emit(self, tx: Transaction, envelope: Envelope, topic: str) -> None:
        try:
            message = encode_emitted(envelope, topic, producer=self.producer, validator=self.validator)
        except SchemaViolation:
            if self.metrics is not None:
                self.metrics.schema_violations_produced.labels(self.producer, envelope.event_type).inc()
            log.exception("refused to emit an invalid %s on %s", envelope.event_type, topic)
            raise
        await self.outbox.add(tx, [message])


@dataclass
class Platform:
    """Everything one Strowger process runs, wired from one Settings object."""

    settings: Settings
    database: Database
    bus: Bus
    outbox: Outbox = field(default_factory=Outbox)
    metrics: Metrics = field(default_factory=Metrics)
    validator: SchemaValidator = field(default_factory=SchemaValidator)
    observer: MetricsObserver = field(init=False)
    tables: list[TableSet] = field(default_factory=list)
    startup_hooks: list[tuple[str | None, Hook]] = field(default_factory=list)
    tasks: list[tuple[str, Task]] = field(default_factory=list)
    routers: list[Any] = field(default_factory=list)
    runners: list[ConsumerRunner] = field(default_factory=list)
    index_links: list[tuple[str, str]] = field(default_factory=list)
    alerts: Any = None  # the AlertMonitor, once monitoring is installed (dashboard reads active alerts)
    pacer: LoopPacer = field(init=False)  # requests first: consumers get what HTTP leaves of the loop
    started: bool = False
    _running: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.observer = MetricsObserver(self.metrics)
        self.pacer = LoopPacer(self.settings.background_share)

    @property
    def background_pacer(self) -> LoopPacer | None:
        """The pacer of background work sharing the loop with HTTP: on SQLite only, as on
        PostgreSQL both sides wait on I/O (bus/pacing.py)."""
        return self.pacer if self.database.kind == "sqlite" else None

    def sink(self, producer: str) -> OutboxSink:
        """Where component ``producer`` emits its events (the transactional outbox)."""
        return OutboxSink(self.outbox, producer, validator=self.validator, metrics=self.metrics)

    def add_tables(self, *table_sets: TableSet) -> None:
        self.tables.extend(table_sets)

    def on_startup(self, hook: Hook, *, part: str | None = None) -> None:
        """Run ``hook`` once the database and bus are up, before the tasks start.

        ``part`` (an API base path, consumer group or task of the component catalogue) names
        whose hook it is, so a process running another component skips it; None: every process.
        """
        self.startup_hooks.append((part, hook))

    def add_task(self, name: str, task: Task) -> None:
        """A coroutine run for the life of the platform (a relay, a consumer loop, a scheduler)."""
        self.tasks.append((name, task))

    def add_consumer(self, consumer: Consumer) -> ConsumerRunner:
        runner = ConsumerRunner(
            consumer,
            self.bus,
            self.database,
            outbox=self.outbox,
            observer=self.observer,
            validator=self.validator,
            timeline=True,
            create_tables=False,  # start() creates every table before any task runs
            pacer=self.background_pacer,
        )
        self.runners.append(runner)
        self.add_task(f"consumer:{consumer.name}", runner.run)
        return runner

    def add_router(self, router: Any, *, title: str | None = None, href: str | None = None) -> None:
        """An HTTP router (FastAPI APIRouter) served by the platform, listed on the index page if titled."""
        self.routers.append(router)
        if title and href:
            self.index_links.append((title, href))

    async def start(self) -> None:
        await self.database.open()
        await self.database.create_tables(*self.tables)
        await self.bus.start()
        await self.bus.ensure_topics(ALL_TOPICS)
        for _, hook in self.startup_hooks:
            await hook()
        for name, task in self.tasks:
            self._running.append(asyncio.create_task(self._supervise(name, task), name=name))
        self.started = True
        log.info("platform started", extra={"database": self.database.kind, "bus": self.bus.kind})

    async def _supervise(self, name: str, task: Task) -> None:
        """Run ``task``; restart it after a crash (with a pause) instead of letting the process die."""
        while True:
            try:
                await task()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s crashed; restarting in 1s", name)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self.started = False
        for running in self._running:
            running.cancel()
        if self._running:
            _, stuck = await asyncio.wait(self._running, timeout=STOP_TIMEOUT)
            for task in stuck:  # a task that ignores cancellation must not hold the process hostage
                log.error("task %s did not stop within %ss", task.get_name(), STOP_TIMEOUT)
        self._running.clear()
        await self.bus.stop()
        await self.database.close()
        log.info("platform stopped")


def empty_platform(settings: Settings) -> Platform:
    """A platform with the settings' database and bus (schema, namespace) and nothing wired yet."""
    database_options: dict[str, Any] = {}
    if settings.database == "postgresql" and settings.database_schema:
        database_options["schema"] = settings.database_schema
    if settings.database == "postgresql" and settings.database_schemas and settings.component != "all":
        from strowger.components.database import borrowed_names

        # Its own schema (database_schema) and role (the URL's); other components' tables are views.
        database_options["borrowed"] = borrowed_names(settings.component, settings.database_schemas)
    database = open_database(settings.database_url, **database_options)
    bus_options: dict[str, Any] = {"database": database} if settings.bus == "embedded" else {}
    bus = open_bus(settings.bus_url, **bus_options)
    if settings.bus_namespace:
        from strowger.bus.namespace import NamespacedBus

        bus = NamespacedBus(bus, settings.bus_namespace)
    return Platform(settings=settings, database=database, bus=bus)


def bootstrap(settings: Settings) -> Platform:
    """Build (not start) the platform the settings describe."""
    platform = empty_platform(settings)
    _backbone(platform)
    _tmf_apis(platform)
    _ordering(platform)
    _downstream(platform)
    _operations(platform)
    _select_component(platform)
    return platform


def _select_component(platform: Platform) -> None:
    """Keep only what ``settings.component`` runs (``strowger run <component>``); ``all`` keeps everything.

    Every process still creates every table, in its own schema in a split cluster (except the
    names it borrows: docs/operations.md, "Database layout"), and serves /health, /ready and
    /metrics; routers, consumers and tasks follow the component catalogue
    (strowger.components.registry).
    """
    from strowger.components.registry import ALL, parse_component

    if platform.settings.component == ALL:
        return
    component = parse_component(platform.settings.component)

    def task_runs(name: str) -> bool:
        return component.runs(name.removeprefix("consumer:"))

    def router_runs(router: Any) -> bool:
        paths = [getattr(route, "path", "") for route in getattr(router, "routes", [])]
        return any(path.startswith(api) for path in paths for api in component.http_apis)

    platform.tasks = [(name, task) for name, task in platform.tasks if task_runs(name)]
    platform.startup_hooks = [
        (part, hook) for part, hook in platform.startup_hooks if part is None or component.runs(part)
    ]
    platform.runners = [runner for runner in platform.runners if component.runs(runner.name)]
    kept = [router for router in platform.routers if router_runs(router)]
    platform.index_links = [
        link for link in platform.index_links if any(link[1].startswith(a) for a in component.http_apis)
    ]
    platform.routers = kept


def _backbone(platform: Platform) -> None:
    from strowger.store.deadletters import PARKED_TABLES
    from strowger.store.inbox import INBOX_TABLES
    from strowger.store.outbox import OUTBOX_TABLES

    settings = platform.settings
    platform.add_tables(OUTBOX_TABLES, INBOX_TABLES, PARKED_TABLES)
    relay = OutboxRelay(
        platform.database,
        platform.bus,
        platform.outbox,
        poll_interval=settings.outbox_poll_interval,
        retention=timedelta(days=settings.retention_days),
        observer=platform.observer,
        pacer=platform.background_pacer,
    )
    if settings.database_schemas and settings.database == "postgresql":
        from strowger.store.outbox_schemas import relay_every_schema

        platform.add_task("outbox-relay", relay_every_schema(platform, relay))  # a split cluster
        return
    platform.add_task("outbox-relay", relay.run)


def _tmf_apis(platform: Platform) -> None:
    """The resource APIs (catalog, inventories, customer bill, events) and webhook delivery of their hubs."""
    from strowger.components.billing.api import CUSTOMER_BILL_API, customer_bill_router
    from strowger.components.catalog.api import CATALOG_API, catalog_router
    from strowger.components.events_api.api import BASE_PATH as EVENT_API_BASE_PATH
    from strowger.components.events_api.api import event_router
    from strowger.components.inventory.api import (
        PRODUCT_INVENTORY_API,
        RESOURCE_INVENTORY_API,
        SERVICE_INVENTORY_API,
        product_inventory_router,
        resource_inventory_router,
        service_inventory_router,
    )
    from strowger.components.resource_ordering.api import RESOURCE_ORDERING_API
    from strowger.tmf import delivery
    from strowger.tmf.hubs import CallbackGuard

    guard = CallbackGuard.from_settings(platform.settings.hub_allowed_networks)
    database = platform.database
    apis = [
        ("TMF620 Product Catalog", catalog_router, "catalog", CATALOG_API.base_path),
        ("TMF637 Product Inventory", product_inventory_router, "inventory", PRODUCT_INVENTORY_API.base_path),
        ("TMF638 Service Inventory", service_inventory_router, "inventory", SERVICE_INVENTORY_API.base_path),
        (
            "TMF639 Resource Inventory",
            resource_inventory_router,
            "inventory",
            RESOURCE_INVENTORY_API.base_path,
        ),
        ("TMF678 Customer Bill", customer_bill_router, "billing", CUSTOMER_BILL_API.base_path),
        ("TMF688 Event", event_router, "events", EVENT_API_BASE_PATH),
    ]
    for title, router_factory, producer, base_path in apis:
        platform.add_router(
            router_factory(database, platform.sink(producer), guard),
            title=f"{title} (OpenAPI)",
            href=f"{base_path}/openapi.json",
        )
    if platform.settings.sample_catalog:
        from strowger.components.catalog.seed import load_sample_catalog

        async def seed_catalog() -> None:
            inserted = await load_sample_catalog(database, platform.sink("catalog"))
            log.info("sample catalog loaded", extra={"documents": inserted})

        platform.on_startup(seed_catalog, part=CATALOG_API.base_path)
    delivery.install(
        platform,
        [
            CATALOG_API,
            PRODUCT_INVENTORY_API,
            SERVICE_INVENTORY_API,
            RESOURCE_INVENTORY_API,
            CUSTOMER_BILL_API,
            RESOURCE_ORDERING_API,
        ],
        extra_routes=[_product_ordering_hub_route()],
    )


def _product_ordering_hub_route() -> Any:
    """TMF622 ``/hub`` subscribers receive the event-sourced orders' notifications (not a toolkit API)."""
    from strowger.components.ordering.api import API_NAME
    from strowger.components.ordering.notifications import TOPIC
    from strowger.tmf.delivery import HubRoute

    kinds = ("ProductOrder", "CancelProductOrder")
    changes = ("CreateEvent", "AttributeValueChangeEvent", "StateChangeEvent", "DeleteEvent")
    return HubRoute(API_NAME, TOPIC, frozenset(kind + change for kind in kinds for change in changes))


def _ordering(platform: Platform) -> None:
    """COM (TMF622, event-sourced) and its read side; SOM (TMF641) and its fulfilment saga."""
    from strowger.components.ordering.wiring import install as install_ordering
    from strowger.projections.wiring import install as install_projections

    install_ordering(platform)
    install_projections(platform)
    from strowger.components.service_ordering.wiring import install as install_service_ordering

    install_service_ordering(platform)
    _executors(platform)


def _executors(platform: Platform) -> None:
    """What SOM's fulfilment saga commands: ROM (TMF652 + pools), network activation, inventories."""
    from strowger.components.activation.wiring import install as install_activation
    from strowger.components.inventory.wiring import install as install_inventory_commands
    from strowger.components.resource_ordering.wiring import install as install_rom

    install_rom(platform)
    install_activation(platform)
    install_inventory_commands(platform)


def _downstream(platform: Platform) -> None:
    """Choreography: components that react to order events and that no publisher knows about."""
    from strowger.components.analytics.wiring import install as install_analytics
    from strowger.components.billing.wiring import install as install_billing
    from strowger.components.notification.wiring import install as install_notification

    install_billing(platform)
    install_notification(platform)
    install_analytics(platform)


def _operations(platform: Platform) -> None:
    from strowger.events.registry import SchemaRegistry
    from strowger.events.schemas import builtin_schemas
    from strowger.ops.dlq_api import router as dlq_router
    from strowger.ops.registry_api import asyncapi_router, registry_router
    from strowger.ops.trace_timeline import TRACE_TABLES
    from strowger.ops.trace_timeline import router as trace_router
    from strowger.security import AUDIT_TABLES

    platform.add_tables(AUDIT_TABLES, TRACE_TABLES)
    registry = SchemaRegistry(platform.database)

    async def seed_registry() -> None:
        await registry.create_tables()
        await registry.register_all(await asyncio.to_thread(builtin_schemas))

    async def load_validators() -> None:  # every process validates what it emits and consumes
        await registry.create_tables()
        loaded = await platform.validator.load(registry)
        log.info("event schemas loaded for validation", extra={"schemas": loaded})

    # First, so the events other startup hooks emit (the sample catalog) are validated too.
    platform.startup_hooks[:0] = [("/schema-registry", seed_registry), (None, load_validators)]
    platform.add_router(dlq_router, title="Dead letters", href="/dlq")
    platform.add_router(registry_router(registry), title="Schema registry", href="/schema-registry/subjects")
    platform.add_router(asyncapi_router(registry), title="AsyncAPI", href="/asyncapi.json")
    platform.add_router(trace_router)
    _monitoring(platform)
    from strowger.components.reconciliation.wiring import install as install_reconciliation
    from strowger.ops.dashboard import install as install_dashboard

    install_reconciliation(platform)

    install_dashboard(platform)


def _monitoring(platform: Platform) -> None:
    """Gauges that need a query, and the alert rules over the same observations."""
    from strowger.components.database import operations_across_components
    from strowger.ops.alerts import AlertEngine, AlertMonitor, AlertSettings
    from strowger.ops.sampler import PlatformSampler, run_monitor

    sampler = PlatformSampler(
        platform.database,
        platform.bus,
        platform.metrics,
        platform.runners,  # filled as components add consumers; read at each sample
        sagas=any(table.name.startswith("saga") for table in platform.tables),
        outbox_across_components=operations_across_components(platform.settings),
    )
    engine = AlertEngine.from_settings(load_section(AlertSettings))
    monitor = AlertMonitor(platform.database, sampler, platform.sink("operations"), engine)
    platform.alerts = monitor
    platform.add_task("alert-monitor", lambda: run_monitor(monitor))
