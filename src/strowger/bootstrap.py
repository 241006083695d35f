"""The composition root: the one place that turns settings into running parts.

``Platform`` owns the database, the bus and every long-running task (outbox
relays, consumers, schedulers). Components register themselves through
:meth:`Platform.add_task` and :meth:`Platform.add_router`; nothing else in the
code base constructs adapters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from strowger.bus import Bus, open_bus
from strowger.settings import Settings
from strowger.store.db import Database, open_database

log = logging.getLogger("strowger.platform")

Task = Callable[[], Awaitable[None]]


@dataclass
class Platform:
    """Everything one Strowger process runs, wired from one Settings object."""

    settings: Settings
    database: Database
    bus: Bus
    tasks: list[tuple[str, Task]] = field(default_factory=list)
    routers: list[Any] = field(default_factory=list)
    _running: list[asyncio.Task[None]] = field(default_factory=list)
    started: bool = False

    def add_task(self, name: str, task: Task) -> None:
        """A coroutine run for the life of the platform (a relay, a consumer loop, a scheduler)."""
        self.tasks.append((name, task))

    def add_router(self, router: Any) -> None:
        """An HTTP router (FastAPI APIRouter) served by the platform."""
        self.routers.append(router)

    async def start(self) -> None:
        await self.database.open()
        await self.bus.start()
        for name, task in self.tasks:
            self._running.append(asyncio.create_task(self._supervise(name, task), name=name))
        self.started = True
        log.info("platform started", extra={"component": self.settings.component})

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
        for running in self._running:
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
        await self.bus.stop()
        await self.database.close()
        self.started = False
        log.info("platform stopped")


def bootstrap(settings: Settings) -> Platform:
    """Build (not start) the platform the settings describe."""
    database = open_database(settings.database_url)
    bus_options: dict[str, Any] = {"database": database} if settings.bus == "embedded" else {}
    bus = open_bus(settings.bus_url, **bus_options)
    return Platform(settings=settings, database=database, bus=bus)
