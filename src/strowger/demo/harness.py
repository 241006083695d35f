"""An in-process platform served over real HTTP: what ``strowger run all`` serves, on a free loopback port.

``local_platform(backend)`` bootstraps the whole platform (embedded: SQLite in a
fresh directory; postgres+kafka: a throw-away PostgreSQL schema and the Kafka
broker), mints a one-off admin API key and serves the app with uvicorn on
127.0.0.1, so the demo drives it exactly as a remote client would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.demo import BACKENDS
from strowger.security import hash_api_key, load_security_settings
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings, load_settings

DEFAULT_POSTGRES_URL = "postgresql://strowger:strowger@127.0.0.1:5432/strowger"
DEFAULT_KAFKA_URL = "kafka://127.0.0.1:9092"
SERVER_START_TIMEOUT = 60.0


@dataclass
class LocalPlatform:
    """A started platform and how to reach it."""

    platform: Platform
    base_url: str
    api_key: str


def platform_settings(backend: str, workdir: Path, namespace: str) -> Settings:
    """Settings for ``backend``; postgres+kafka takes its URLs from STROWGER_DATABASE_URL/BUS_URL if set.

    PostgreSQL + Kafka runs in a throw-away schema and topic namespace, so a run never
    sees another run's rows or messages.
    """
    # A short relay poll: an idle-then-busy run must not wait half a second for its first events.
    if backend == "embedded":
        return load_settings(
            database_url=f"sqlite:///{workdir}/strowger.db", bus_url="embedded://", outbox_poll_interval=0.05
        )
    if backend == "postgres+kafka":
        database_url = os.environ.get("STROWGER_DATABASE_URL", DEFAULT_POSTGRES_URL)
        if not database_url.startswith(("postgresql://", "postgres://")):
            database_url = DEFAULT_POSTGRES_URL
        bus_url = os.environ.get("STROWGER_BUS_URL", DEFAULT_KAFKA_URL)
        if not bus_url.startswith("kafka://"):
            bus_url = DEFAULT_KAFKA_URL
        return load_settings(
            database_url=database_url,
            database_schema=namespace,
            bus_url=bus_url,
            bus_namespace=namespace,
            outbox_poll_interval=0.05,
        )
    raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")


async def drop_schema(url: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def free_loopback_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 with a port the kernel chose (no race with other processes)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@asynccontextmanager
async def local_platform(backend: str, workdir: Path | None = None) -> AsyncIterator[LocalPlatform]:
    """Bootstrap, start and serve the platform; stop it and remove what it created on exit."""
    schema = f"demo_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="strowger-demo-") as scratch:
        directory = workdir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        settings = platform_settings(backend, directory, schema)
        try:
            async with _served(bootstrap(settings)) as served:
                yield served
        finally:
            if settings.database == "postgresql":
                await drop_schema(settings.database_url, schema)


@asynccontextmanager
async def _served(platform: Platform) -> AsyncIterator[LocalPlatform]:
    api_key = f"stw_demo-{secrets.token_urlsafe(24)}"
    entry = ApiKeyEntry(name="demo", sha256=hash_api_key(api_key), scopes=("admin",))
    app = create_app(platform, load_security_settings(api_keys=(entry,), api_keys_file=None))
    sock = free_loopback_socket()
    port = sock.getsockname()[1]
    # Keep-alive longer than the client's pauses: uvicorn's 5 s default closes idle connections
    # just as the client reuses them ("Server disconnected without sending a response").
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=120)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="demo-uvicorn")
    try:
        await _wait_started(server, serving)
        yield LocalPlatform(platform, f"http://127.0.0.1:{port}", api_key)
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def _wait_started(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    async with asyncio.timeout(SERVER_START_TIMEOUT):
        while not server.started:
            if serving.done():  # startup failed: surface uvicorn's own error
                serving.result()
                raise RuntimeError("the platform did not start (see the log above)")
            await asyncio.sleep(0.05)
