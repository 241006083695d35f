"""WAL frames (4 KiB pages) the embedded platform writes per accepted order, API alone.

    .venv/bin/python scripts/measure/wal_frames_per_order.py [orders]

Serves the platform as `strowger bench api` does (consumers not started; relay and projections
run), with the checkpoint thread idle so the WAL only grows; posts a warm-up of 50 orders, then
``orders`` one by one, and divides the WAL's growth by (page size + 24-byte frame header) and by
the orders. Used for docs/benchmarks.md (API, session 19).
"""

import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path

import httpx
import uvloop

import strowger.store.sqlite as sqlite_store
from strowger.bench import api as bench
from strowger.bootstrap import bootstrap
from strowger.demo.harness import platform_settings

KEY = "stw_bench-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
WARM_UP = 50


async def main(orders: int) -> None:
    sqlite_store.Checkpointer._run = lambda self: self._stopping.wait()  # type: ignore[method-assign]
    bodies = bench._bodies(WARM_UP + orders, 7)
    with tempfile.TemporaryDirectory() as directory:
        platform = bootstrap(platform_settings("embedded", Path(directory), namespace=""))
        bench.without_consumers(platform)
        wal = Path(directory) / "strowger.db-wal"
        async with bench.served(bench.platform_app(platform, KEY)) as url, httpx.AsyncClient() as client:
            headers = {"X-API-Key": KEY, "Content-Type": "application/json"}

            async def post(body: bytes) -> None:
                response = await client.post(url + bench.ORDER_PATH, content=body, headers=headers)
                assert response.status_code == 201, response.text

            for body in bodies[:WARM_UP]:
                await post(body)
            await asyncio.sleep(1.0)
            before = wal.stat().st_size
            for body in bodies[WARM_UP:]:
                await post(body)
            await asyncio.sleep(1.5)  # the relay and the projections catch up
            after = wal.stat().st_size
        page_size = sqlite3.connect(Path(directory) / "strowger.db").execute("PRAGMA page_size").fetchone()[0]
        print(
            f"page size {page_size}: {(after - before) / (page_size + 24) / orders:.1f} WAL frames per order"
        )


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
