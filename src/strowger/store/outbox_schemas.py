"""The outbox relay of a split cluster: one relay per component schema, in the relay's process.

Each component writes its events into the ``outbox`` of its own schema (docs/operations.md,
"Database layout"). The relay component connects as its own role, once per component schema
(``search_path`` = that schema alone), and runs an :class:`OutboxRelay` on each. Its role is
granted exactly SELECT, UPDATE, DELETE on each ``outbox`` and SELECT, DELETE on each ``inbox``
(the purge), so it can relay and purge but read nothing else.

Why not a relay inside every component process: the relay stays one deployable unit that
scales and fails on its own (the chaos suite kills it), and a component process keeps one job.
The price is the poll: a commit in another process is seen within ``outbox_poll_interval``.
One *watcher* query asks every schema at once whether rows wait (one round trip per interval
instead of one per schema) and wakes the relays that have some; each relay still polls on its
own, ``WATCH_SLACK`` times less often, in case the watcher fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from strowger.store.db import Database
from strowger.store.outbox import Outbox, OutboxRelay
from strowger.store.postgres import PostgresDatabase

if TYPE_CHECKING:
    from strowger.bootstrap import Platform, Task

log = logging.getLogger("strowger.outbox")

WATCH_SLACK = 10  # a relay's own poll, in watcher intervals


def relay_every_schema(platform: Platform, template: OutboxRelay) -> Task:
    """A task relaying each component schema of ``settings.database_schemas``, configured as ``template``."""
    from strowger.components.database import borrowed_names, component_schemas

    settings = platform.settings
    schemas = component_schemas(settings.database_schemas)

    def relay_for(component: str) -> OutboxRelay:
        borrowed = borrowed_names(component, settings.database_schemas)  # operations: no inbox of its own
        database = PostgresDatabase(
            settings.database_url,
            schema=schemas[component],
            max_size=template.concurrency + 1,
            borrowed=borrowed,
        )
        return OutboxRelay(
            database,
            template.bus,
            Outbox(),  # no commit in this process wakes it: it polls
            batch_size=template.batch_size,
            poll_interval=template.poll_interval * WATCH_SLACK,  # the watcher wakes it sooner
            retention=template.retention,
            purge_interval=template.purge_interval,
            error_pause=template.error_pause,
            concurrency=template.concurrency,
            observer=template.observer,
            purge_inbox="inbox" not in borrowed,
        )

    async def run() -> None:
        relays = {schemas[component]: relay_for(component) for component in sorted(schemas)}
        try:
            for relay in relays.values():  # before the tasks: the watcher shares the first database
                await relay.database.open()
            async with asyncio.TaskGroup() as group:  # one failing (at start) stops all: restarted together
                for relay in relays.values():
                    group.create_task(relay.run())
                watcher = next(iter(relays.values())).database  # the probe names every schema
                group.create_task(watch(watcher, relays, template.poll_interval))
        finally:
            for relay in relays.values():
                await relay.database.close()

    return run


def pending_probe(schemas: list[str]) -> str:
    """One query: the schemas whose outbox has unpublished rows (names validated by Settings)."""
    return " UNION ALL ".join(
        f"SELECT '{schema}' WHERE EXISTS "  # noqa: S608 (schema names match [a-z_][a-z0-9_]*)
        f'(SELECT 1 FROM "{schema}".outbox WHERE published_at IS NULL)'
        for schema in schemas
    )


async def watch(database: Database, relays: Mapping[str, OutboxRelay], interval: float) -> None:
    """Every ``interval``: wake the relays of the schemas where rows wait."""
    probe = pending_probe(sorted(relays))
    while True:
        try:
            waiting = await database.fetchall(probe)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is restarting: the relays' own polls carry on
            log.warning("outbox watcher query failed; retrying in %.1fs", interval, exc_info=True)
            waiting = []
        for (schema,) in waiting:
            relays[str(schema)].outbox.wake()
        await asyncio.sleep(interval)
