"""CPU per POST of the two webhook clients, side by side, against the hub bench's listener.

    .venv/bin/python scripts/measure/webhook_clients.py [rounds]

10,000 signed POSTs per round, concurrency 32, on uvloop; the listener runs in a child process
(its own core). Prints POSTs/s and the client process's CPU per POST for aiohttp and for
``strowger.tmf.http1``, alternated. Used for docs/benchmarks.md (Hub, session 19).
"""

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from strowger.bench.hub import SECRET, _events, serve_listener
from strowger.events.envelope import Message, encode
from strowger.tmf.delivery import delivery_headers
from strowger.tmf.http1 import Http1Client

CONCURRENCY = 32
Post = Callable[[bytes, dict[str, str]], Awaitable[int]]


async def drive(post: Post, messages: list[Message]) -> None:
    pending = iter(messages)

    async def worker() -> None:
        for message in pending:
            headers = delivery_headers(message.headers, message.value, SECRET, 1)
            headers["Content-Type"] = "application/json"
            assert await post(message.value, headers) == 204

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def with_aiohttp(url: str, messages: list[Message]) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout) as s:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            async with s.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        await drive(post, messages)


async def with_http1(url: str, messages: list[Message]) -> None:
    client = Http1Client(timeout=10, max_idle=CONCURRENCY)

    async def post(body: bytes, headers: dict[str, str]) -> int:
        return (await client.post(url, None, body, headers)).status

    try:
        await drive(post, messages)
    finally:
        await client.close()


async def main(rounds: int) -> None:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    counter = context.Value("q", 0)  # kept referenced until the child has it
    listener = context.Process(target=serve_listener, args=(send, counter), daemon=True)
    listener.start()
    url = f"http://127.0.0.1:{receive.recv()}/listener"
    messages = [encode(envelope, "bench") for envelope in _events(10_000, 1_000)]
    try:
        for _ in range(rounds):
            for name, run in (("aiohttp", with_aiohttp), ("strowger.tmf.http1", with_http1)):
                wall, cpu = time.perf_counter(), time.process_time()
                await run(url, messages)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                per_post = 1e6 * cpu / len(messages)
                print(f"{name:20s} {len(messages) / wall:8.0f} POSTs/s {per_post:6.0f} µs CPU/POST")
    finally:
        listener.terminate()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
