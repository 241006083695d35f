"""Background work yields the event loop to HTTP requests served by the same process.

In one process (``strowger run all``, the embedded default) the consumers and the
API share one event loop, and SQLite work never suspends: a consumer with a backlog
would run batch after batch while every HTTP request waits, and a closed-loop client
then gets the fulfilment rate (a few orders a second), not the API's.

**Requests come first.** While the API is busy (serving requests took at least ``busy_load``
of the loop over about the last ``load_window`` seconds), :class:`LoopPacer` holds the
consumers' batches (and the projections') to what the requests leave: ``1 - load -
reserve`` of the loop's wall time, and never less than ``share`` (``STROWGER_BACKGROUND_SHARE``,
default 0.1), so fulfilment still moves under a flood of orders. The ``reserve`` is spare loop
time the requests can grow into: when they need more, their load rises and the consumers'
allowance falls, until the requests have what they need or the consumers are down to
``share``. (Until session 20 the consumers kept half the loop while the API was busy: the
platform then accepted orders at half the rate of the API alone during a burst, while
fulfilment, at tens of orders a second in one process, fell behind anyway.) And while any
request is being served,
a batch takes only as many events as fit ``batch_budget`` seconds at the consumer's
last cost per event (a batch of a hundred saga steps held the loop for up to two
seconds), so requests interleave with batches. With the API idle or lightly used
(every consumer-only process of a cluster, a few requests a second) no batch waits:
the loop's spare time goes to the consumers.

Only where SQLite work runs on the loop: the platform paces its consumers on SQLite
only, as on PostgreSQL both sides suspend on I/O and wall time is not loop time.
Pacing only delays the next fetch: what a batch does, commits and acknowledges is
unchanged (at-least-once holds); under a sustained load above what fulfilment can
follow, the consumers' lag grows instead of the API's latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

DEFAULT_SHARE = 0.1  # of the loop the consumers keep however busy the API is
RESERVE = 0.15  # of the loop left spare for requests to grow into while the API is busy
LOAD_WINDOW = 0.5  # seconds over which the API's share of the loop is averaged (decay constant)
BUSY_LOAD = 0.2  # the API is busy while serving requests takes at least this share of the loop
BATCH_BUDGET = 0.01  # seconds a consumer batch should hold the loop while the API is busy
BURST = 0.05  # seconds of loop time the consumers may take at once after a pause


class LoopPacer:
    """Shares one event loop between HTTP requests (foreground) and consumer batches (background).

    A token bucket of loop time: it fills at :attr:`allowance` seconds per second of wall time
    (up to ``burst``); a batch run while the API is busy takes its duration out, and no batch
    starts while the bucket is in debt. Several consumers may run in one turn of the loop as
    long as time is left (one turn can last tens of milliseconds when many requests arrive
    together, so a single "next batch at" mark would let one batch through per turn).
    """

    def __init__(
        self,
        share: float = DEFAULT_SHARE,
        *,
        load_window: float = LOAD_WINDOW,
        busy_load: float = BUSY_LOAD,
        reserve: float = RESERVE,
        batch_budget: float = BATCH_BUDGET,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.reserve = reserve
        self.load_window = load_window
        self.busy_load = busy_load
        self.batch_budget = batch_budget
        self.burst = burst
        self.clock = clock
        self._load = 0.0  # seconds serving requests per second, decayed over load_window
        self._load_at = clock()
        self._served_at = float("-inf")  # when the last request ended
        self._tokens = burst  # seconds of loop time the consumers may still take now
        self._filled_at = clock()

    def served(self, seconds: float) -> None:
        """An HTTP request took ``seconds`` of the loop (called for each one)."""
        now = self.clock()
        self._load = self._load_now(now) + seconds / self.load_window
        self._load_at = self._served_at = now

    @property
    def load(self) -> float:
        """The share of the loop spent serving requests lately (0 to about 1)."""
        return self._load_now(self.clock())

    @property
    def allowance(self) -> float:
        """The share of the loop batches may take while the API is busy: what the requests leave
        (less the reserve), at least ``share``."""
        return max(self.share, min(1.0, 1.0 - self.load - self.reserve))

    @property
    def busy(self) -> bool:
        """Requests take at least ``busy_load`` of the loop: batches are then held to ``share``."""
        return self.load >= self.busy_load

    @property
    def serving(self) -> bool:
        """A request was served within ``load_window``: batches are then held to ``batch_budget``."""
        return self.clock() - self._served_at < self.load_window

    def _load_now(self, now: float) -> float:
        return self._load * math.exp(-(now - self._load_at) / self.load_window)

    def batch_size(self, largest: int, seconds_per_event: float) -> int:
        """How many events the next batch may take: ``largest``, or while requests are being served
        as many as fit the batch budget at the consumer's last cost per event (at least one).

        On as soon as any request is served, not only when the API is busy: a batch of seconds
        would keep the API from serving enough to ever look busy.
        """
        if not self.serving or seconds_per_event <= 0:
            return largest
        return max(1, min(largest, int(self.batch_budget / seconds_per_event)))

    def spent(self, seconds: float) -> None:
        """A batch took ``seconds`` of the loop: taken from the bucket while the API is busy."""
        if self.busy and self.allowance < 1:
            self._fill()
            self._tokens -= seconds

    def delay(self) -> float:
        """Seconds before a batch may start (0 unless batches run while the API was busy took
        more than their share).

        Only batches run while the API was busy take from the bucket, so a debt is only
        ever owed to requests.
        """
        self._fill()
        return 0.0 if self._tokens > 0 else -self._tokens / self.allowance

    def _fill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.allowance)
        self._filled_at = now

    async def turn(self) -> None:
        """Wait until a batch may start; always gives the loop one turn (SQLite work never suspends)."""
        await asyncio.sleep(0)
        wait = self.delay()
        if wait > 0:
            await asyncio.sleep(wait)
            await self.turn()  # other batches may have taken the time meanwhile: check again
