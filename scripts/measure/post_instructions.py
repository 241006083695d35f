"""Machine instructions of one POST productOrder inside the application, counted by Valgrind.

    .venv/bin/python scripts/measure/post_instructions.py [posts] [--direct]

Time on this shared 2-vCPU machine moves by 15-30% from one run to the next, so a change
worth 5% cannot be seen in CPU seconds. Instructions can: the same tree counts the same
within 0.3% from run to run. This runs itself under ``valgrind --tool=callgrind`` with
counting off, builds the platform as ``post_cpu_in_process.py`` does (no sockets, no
background work), posts a warm-up, then counts only the measured POSTs (``callgrind_control``
turns counting on and off around them) and prints instructions per POST. ``--direct`` calls
the route's own ASGI app, past every middleware, so the difference is what the middleware
stack costs. User space only: the kernel's share of a COMMIT (its ``pwrite`` calls) is not
in the count. Compare two trees with ``PYTHONPATH=<tree>/src``. Used for docs/benchmarks.md
(API, session 22).
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD_FLAG = "--counted"
WARM_UP = 100


def posts_in(arguments: list[str]) -> int:
    return int(next((value for value in arguments if value.isdigit()), "200"))


def main(arguments: list[str]) -> None:
    posts = posts_in(arguments)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        CHILD_FLAG,
        *arguments,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    collected = re.search(r"Collected : (\d+)", finished.stderr)
    if finished.returncode != 0 or collected is None:
        raise SystemExit(f"valgrind failed:\n{finished.stdout}\n{finished.stderr[-2000:]}")
    target = "the route's own app (--direct)" if "--direct" in arguments else "the whole application"
    print(f"{int(collected.group(1)) / posts:,.0f} instructions per POST through {target} ({posts} POSTs)")


def counted(arguments: list[str]) -> None:
    """The child, under Valgrind: count only the measured POSTs."""
    import orjson
    import uvloop

    sys.path.insert(0, str(Path(__file__).parent))
    from post_cpu_in_process import KEY, post

    from strowger.app import DirectRoutes, freeze_startup_heap
    from strowger.bench import api as bench
    from strowger.bootstrap import bootstrap
    from strowger.demo.harness import platform_settings
    from strowger.demo.orders import BENCH_MIX, OrderGenerator

    posts = posts_in(arguments)

    def counting(on: bool) -> None:
        switch = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
        subprocess.run(switch, capture_output=True, check=True)

    async def run() -> None:
        with tempfile.TemporaryDirectory() as directory:
            platform = bench.without_consumers(bootstrap(platform_settings("embedded", Path(directory), "")))
            platform.tasks = []  # nor the relay and projections: the request's own work only
            app = bench.platform_app(platform, KEY)
            generator = OrderGenerator(BENCH_MIX, seed=1)
            bodies = [orjson.dumps(generator.order()) for _ in range(WARM_UP + posts)]
            target: Any = app

            async with app.router.lifespan_context(app):
                freeze_startup_heap()
                for body in bodies[:WARM_UP]:
                    await post(target, body)  # builds the middleware stack too
                if "--direct" in arguments:
                    layer: Any = app.middleware_stack
                    while not isinstance(layer, DirectRoutes):
                        layer = layer.app
                    target = layer.routes[("POST", bench.ORDER_PATH)]
                counting(True)
                for body in bodies[WARM_UP:]:
                    await post(target, body)
                counting(False)

    uvloop.run(run())


if __name__ == "__main__":
    if CHILD_FLAG in sys.argv:
        counted([value for value in sys.argv[1:] if value != CHILD_FLAG])
    else:
        main(sys.argv[1:])
