"""Background work yields the event loop to HTTP requests served by the same process.

In one process (``strowger run all``, the embedded default) the consumers, the projections,
the outbox relay and the API share one event loop, and SQLite work never suspends: a
consumer with a backlog would run batch after batch while every HTTP request waits, and a
closed-loop client then gets the fulfilment rate (a few orders a second), not the API's.

**Requests come first.** While the API is busy (serving requests took at least ``busy_load``
of the loop the batches left them, over about the last ``load_window`` seconds), a batch
starts only

* when the API is **idle**: no request in the server and none ended, nor any batch, for
  ``idle_gap`` seconds. Background work then takes all the time requests leave (one waiting
  batch is woken per gap, so a request that arrives meanwhile waits for one batch at most);
* or on its **share**: a token bucket filled at ``share`` seconds per second of wall time
  (``STROWGER_BACKGROUND_SHARE``, default 0.1), so fulfilment still moves under a flood of
  orders that never leaves the loop idle.

And while any request is being served, a batch takes only as many events as fit
``batch_budget`` seconds at the consumer's last cost per event, so requests interleave with
batches. With the API idle or lightly used (every consumer-only process of a cluster, a
few requests a second) no batch waits.

Why not a fixed split: with the consumers keeping half the loop while the API was busy, the
platform accepted orders at a quarter of the API's own rate during a burst, while
fulfilment (tens of orders a second in one process) fell behind anyway. And the requests'
measured share of the loop cannot tell what they would need (starved, they take little), so
the demand signal is whether any request is in the server at all.

Only where SQLite work runs on the loop: the platform paces its consumers on SQLite
only, as on PostgreSQL both sides suspend on I/O and wall time is not loop time.
Pacing only delays the next fetch: what a batch does, commits and acknowledges is
unchanged (at-least-once holds); under a sustained load above what fulfilment can
follow, the consumers' lag grows instead of the API's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

DEFAULT_SHARE = 0.1  # of the loop the consumers keep however busy the API is
LOAD_WINDOW = 0.5  # seconds over which the API's share of the loop is averaged (decay constant)
BUSY_LOAD = 0.2  # the API is busy while serving requests takes at least this share of the loop
# ... of the loop the background leaves them, counted as at least this much (see LoopPacer.busy).
LEAST_LEFT = 0.25
BATCH_BUDGET = 0.01  # seconds a consumer batch should hold the loop while the API is busy
BURST = 0.05  # seconds of loop time the consumers may take at once after a pause
IDLE_GAP = 0.002  # seconds without a request in the server (nor a batch) before a batch may start
PROBE_BATCH = 4  # events of a consumer's first batch while requests are served (its cost is unknown)
MAX_DEBT = 1.0  # seconds of waiting the share can owe at most (batches run when idle are charged too)


class ShareOfLoop:
    """The share of the event loop some work took lately: its seconds per second of wall time,
    decaying with time constant ``window``."""

    def __init__(self, window: float, now: float) -> None:
        self.window = window
        self._value = 0.0
        self._at = now

    def add(self, seconds: float, now: float) -> None:
        """The work took ``seconds`` of the loop, ending ``now``."""
        self._value = self.at(now) + seconds / self.window
        self._at = now

    def at(self, now: float) -> float:
        return self._value * math.exp(-(now - self._at) / self.window)


class LoopPacer:
    """Shares one event loop between HTTP requests (foreground) and consumer batches (background).

    A token bucket of loop time: it fills at ``share`` seconds per second of wall time (up to
    ``burst``); a batch run while the API is busy takes its duration out, and no batch
    starts while the bucket is in debt, unless the API is idle. Several consumers may run in
    one turn of the loop as long as time is left (one turn can last tens of milliseconds when
    many requests arrive together, so a single "next batch at" mark would let one batch
    through per turn).

    The HTTP side calls :meth:`begin` and :meth:`served` around each request; the background
    side sizes its batches with :meth:`batch_size`, reports them with :meth:`spent` and waits
    with :meth:`turn`.
    """

    def __init__(
        self,
        share: float = DEFAULT_SHARE,
        *,
        load_window: float = LOAD_WINDOW,
        busy_load: float = BUSY_LOAD,
        batch_budget: float = BATCH_BUDGET,
        burst: float = BURST,
        idle_gap: float = IDLE_GAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.load_window = load_window
        self.busy_load = busy_load
        self.batch_budget = batch_budget
        self.burst = burst
        self.idle_gap = idle_gap
        self.clock = clock
        self._requests = ShareOfLoop(load_window, clock())  # serving HTTP requests
        self._batches = ShareOfLoop(load_window, clock())  # background batches
        self._served_at = float("-inf")  # when the last request ended
        self._batch_at = float("-inf")  # when the last batch ended
        self._in_flight = 0  # requests in the server now
        self._tokens = burst  # seconds of loop time the consumers may still take now
        self._filled_at = clock()
        self._waiting: deque[asyncio.Future[None]] = deque()  # batches waiting for an idle API
        self._idle_check: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """An HTTP request entered the server (call :meth:`served` when it leaves)."""
        self._in_flight += 1

    def served(self, seconds: float) -> None:
        """An HTTP request took ``seconds`` of the loop (called for each one)."""
        now = self._served_at = self.clock()
        self._requests.add(seconds, now)
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self._check_idle_later()

    @property
    def load(self) -> float:
        """The share of the loop spent serving requests lately (0 to about 1)."""
        return self._requests.at(self.clock())

    @property
    def background_load(self) -> float:
        """The share of the loop spent on batches lately (0 to about 1)."""
        return self._batches.at(self.clock())

    @property
    def busy(self) -> bool:
        """Requests take at least ``busy_load`` of the loop the batches leave them: batches then
        wait for their share or an idle API.

        Of what the batches leave, not of the whole loop: batches running unchecked leave
        requests too little of the loop to ever take ``busy_load`` of it (measured: 150 orders
        a second, batches taking most of the loop, the API never "busy", for the whole of a
        40 s run), so starved requests would keep the batches unchecked. What is left counts
        as at least ``LEAST_LEFT`` of the loop, so a few requests beside saturated batches (a
        metrics scrape, a dashboard) do not look busy.
        """
        left = max(1.0 - self.background_load, LEAST_LEFT)
        return self.load >= self.busy_load * left

    @property
    def serving(self) -> bool:
        """A request was served within ``load_window``: batches are then held to ``batch_budget``."""
        return self.clock() - self._served_at < self.load_window

    @property
    def idle(self) -> bool:
        """No request in the server, and neither a request nor a batch ended within ``idle_gap``."""
        now = self.clock()
        return (
            self._in_flight == 0
            and now - self._served_at >= self.idle_gap
            and now - self._batch_at >= self.idle_gap
        )

    def batch_size(self, largest: int, seconds_per_event: float) -> int:
        """How many events the next batch may take: ``largest``, or while requests are being served
        as many as fit the batch budget at the consumer's last cost per event (at least one;
        ``PROBE_BATCH`` while that cost is unknown, as a full first batch could hold the loop
        for a hundred milliseconds).

        On as soon as any request is served, not only when the API is busy: a batch of seconds
        would keep the API from serving enough to ever look busy.
        """
        if not self.serving:
            return largest
        if seconds_per_event <= 0:  # no cost known yet: a small first batch measures it
            return min(largest, PROBE_BATCH)
        return max(1, min(largest, int(self.batch_budget / seconds_per_event)))

    def spent(self, seconds: float) -> None:
        """A batch took ``seconds`` of the loop: taken from the bucket while the API is busy."""
        if self.busy and self.share < 1:
            self._fill()
            self._tokens = max(self._tokens - seconds, -self.share * MAX_DEBT)
        self._batch_at = self.clock()
        self._batches.add(seconds, self._batch_at)
        self._check_idle_later()

    def delay(self) -> float:
        """Seconds before a batch may start on the share (0 unless batches run while the API was
        busy took more than it; an idle API lets a batch start earlier, see :meth:`turn`).

        Only batches run while the API was busy take from the bucket, so a debt is only
        ever owed to requests, and only while they keep the API busy.
        """
        self._fill()
        if self._tokens > 0 or not self.busy:
            return 0.0
        return -self._tokens / self.share

    def _fill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.share)
        self._filled_at = now

    async def turn(self) -> None:
        """Wait until a batch may start; always gives the loop one turn (SQLite work never suspends)."""
        await asyncio.sleep(0)
        while (wait := self.delay()) > 0 and not self.idle:
            granted = asyncio.get_running_loop().create_future()
            self._waiting.append(granted)
            self._check_idle_later()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await granted
            if granted.done() and not granted.cancelled():
                return  # the API went idle: this batch may run now
            with contextlib.suppress(ValueError):
                self._waiting.remove(granted)

    def _check_idle_later(self) -> None:
        """Look again in ``idle_gap`` whether the API is idle, if a batch is waiting for that."""
        if self._waiting and self._idle_check is None:
            self._idle_check = asyncio.get_running_loop().call_later(self.idle_gap, self._wake_one)

    def _wake_one(self) -> None:
        """Let one waiting batch run if the API is idle; its end looks again (:meth:`spent`)."""
        self._idle_check = None
        if not self.idle:
            if self._in_flight == 0:  # a request or batch ended too recently: look again soon
                self._check_idle_later()
            return  # a request is in the server: it looks again when it leaves
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class PacedBatches:
    """One background worker's batches through a pacer: a turn first, then a batch sized to the
    budget at the worker's last cost per event, its time charged (projections, the outbox relay)."""

    def __init__(self, pacer: LoopPacer) -> None:
        self.pacer = pacer
        self.seconds_per_event = 0.0  # of the last batch, to size the next one

    async def run(self, largest: int, batch: Callable[[int], Awaitable[int]]) -> tuple[int, int]:
        """``batch(limit)`` when its turn comes (it returns how many events it took): (count, limit)."""
        await self.pacer.turn()
        limit = self.pacer.batch_size(largest, self.seconds_per_event)
        started = time.perf_counter()
        count = await batch(limit)
        if count:
            seconds = time.perf_counter() - started
            self.seconds_per_event = seconds / count
            self.pacer.spent(seconds)
        return count, limit
