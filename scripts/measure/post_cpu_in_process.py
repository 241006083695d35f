"""Server CPU of one POST productOrder inside the application, without sockets or background work.

    .venv/bin/python scripts/measure/post_cpu_in_process.py [posts per round] [rounds]

Builds the platform as `strowger bench api` does (consumers, relay and projections not
started), freezes the start-up heap, and calls the ASGI application directly with a valid
TMF622 body and the admin key, one request after the other; prints, per round, the process
CPU per POST and the event loop thread's (the one a single process can saturate; other
threads, such as SQLite's checkpointer, use the second core). What it leaves out (uvicorn,
the relay, the projections) is the difference to the
bench's "API alone" CPU per request. Used for docs/benchmarks.md (API, sessions 20 and 21).
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from strowger.app import freeze_startup_heap
from strowger.bench import api as bench
from strowger.bootstrap import bootstrap
from strowger.demo.harness import platform_settings
from strowger.demo.orders import BENCH_MIX, OrderGenerator

KEY = "stw_measure-in-process-0123456789abcdefghijkl"
WARM_UP = 300


def scope_for(body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"measure"),
        (b"content-type", b"application/json"),
        (b"x-api-key", KEY.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": bench.ORDER_PATH,
        "raw_path": bench.ORDER_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def post(app: Any, body: bytes) -> None:
    """POST ``body`` to the ASGI ``app`` as a TMF client would; SystemExit unless it answers 201."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # nobody disconnects
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope_for(body), receive, send)
    if statuses != [201]:
        raise SystemExit(f"expected a 201, got {statuses}")


async def main(posts: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        platform = bench.without_consumers(bootstrap(platform_settings("embedded", Path(directory), "")))
        platform.tasks = []  # nor the relay and projections: the request's own work only
        app = bench.platform_app(platform, KEY)
        generator = OrderGenerator(BENCH_MIX, seed=1)
        bodies = [orjson.dumps(generator.order()) for _ in range(WARM_UP + posts * rounds)]

        async with app.router.lifespan_context(app):
            freeze_startup_heap()
            for body in bodies[:WARM_UP]:
                await post(app, body)
            for round_number in range(rounds):
                chunk = bodies[WARM_UP + round_number * posts : WARM_UP + (round_number + 1) * posts]
                started, loop_started = time.process_time(), time.thread_time()
                for body in chunk:
                    await post(app, body)
                cpu = (time.process_time() - started) / posts
                loop_cpu = (time.thread_time() - loop_started) / posts
                print(
                    f"round {round_number + 1}: {cpu * 1e6:.0f} µs CPU per POST, "
                    f"{loop_cpu * 1e6:.0f} µs of it on the event loop's thread"
                )


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:3]]
    uvloop.run(main(*(arguments + [2000, 3][len(arguments) :])))
